"""Systematic exploration on a grid: sweep unvisited cells, then exploit.

A learner for the Dark Room family that knows nothing of the goal but what
its rewards tell it. It remembers, across episodes, every cell it has
entered. Until a reward has been paid it walks to the nearest cell it has
never entered (Manhattan distance, ties to the lowest row-major index), so
each episode extends the explored region outward from the start; once a
step has paid, it walks the shortest path to that cell in every later
episode. Its first episodes explore and its later ones exploit: a learning
history whose improvement, like a learner's, comes only from experience.

Why it exists: AD-epsilon's random-walk exploration cannot find a goal on
Dark Room Hard's 17x17 grid within 20 steps (about 4% of episodes), so AD
distilled from it never learns to search; this learner finds every goal
within 18 episodes (PAPER.md: AD on Hard needs a source that explores).
Because ties break the same way on every task, its search is one fixed
sequence of paths until the goal shows up, and the previous episode's path
in context tells the model which comes next.

With `epsilon` > 0 an actor takes a uniform random action with that
probability (its memory still records where it went).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import struct

from algdist.agents import base
from algdist.envs import dark_room


@dataclasses.dataclass(frozen=True)
class Config:
  """One sweeping learner's whole history."""

  num_steps: int = 1200  # env steps per stream (T)
  num_actors: int = 1  # streams, each with its own memory and env copy
  epsilon: float = 0.0  # probability of a uniform random action per step


CONFIGS = {'coverage': Config()}


@struct.dataclass
class Memory:
  """What one actor knows: where it has been and where reward was paid."""

  visited: jax.Array  # [size, size] bool, indexed [x, y]: cells entered
  goal_known: jax.Array  # () bool: some step has paid
  goal: jax.Array  # (2,) int32: the cell that paid (valid if goal_known)


def validate(config: Config) -> None:
  """Raises ValueError naming any impossible field of `config`."""
  for field in ('num_steps', 'num_actors'):
    if getattr(config, field) < 1:
      raise ValueError(f'{field}={getattr(config, field)}: must be >= 1.')
  if not 0 <= config.epsilon <= 1:
    raise ValueError(f'epsilon={config.epsilon}: must be in [0, 1].')


def empty_memory(size: int) -> Memory:
  """An actor that has entered no cell (not even the start: staying on it
  with a no-op is how it learns whether the start pays)."""
  return Memory(
    visited=jnp.zeros((size, size), bool),
    goal_known=jnp.bool_(False),
    goal=jnp.zeros((2,), jnp.int32),
  )


def nearest_unvisited(pos: jax.Array, visited: jax.Array) -> jax.Array:
  """The (x, y) of the unvisited cell closest to `pos` (Manhattan; ties to
  the lowest x * size + y); `pos` itself when every cell is visited."""
  size = visited.shape[0]
  x, y = jnp.meshgrid(jnp.arange(size), jnp.arange(size), indexing='ij')
  distance = jnp.abs(x - pos[0]) + jnp.abs(y - pos[1])
  distance = jnp.where(visited, jnp.iinfo(jnp.int32).max, distance)
  index = jnp.argmin(distance.reshape(-1))  # first minimum: lowest index
  cell = jnp.stack([index // size, index % size]).astype(jnp.int32)
  return jnp.where(visited.all(), pos, cell)


def act(memory: Memory, pos: jax.Array) -> jax.Array:
  """The learner's action at `pos`: to the paid cell, else to explore."""
  target = jnp.where(
    memory.goal_known, memory.goal, nearest_unvisited(pos, memory.visited)
  )
  return dark_room.step_toward(pos, target)


def remember(memory: Memory, new_pos: jax.Array, reward: jax.Array) -> Memory:
  """Memory after a step into `new_pos` that paid `reward`."""
  paid = reward > 0
  return Memory(
    visited=memory.visited.at[new_pos[0], new_pos[1]].set(True),
    goal_known=memory.goal_known | paid,
    goal=jnp.where(paid & ~memory.goal_known, new_pos, memory.goal),
  )


def make_train(config: Config, env):
  """Returns `train(key, task_params) -> (Memory, History)`.

  Memory leaves are [num_actors, ...]; history leaves [num_actors,
  num_steps, ...].
  """
  validate(config)
  if not isinstance(env, dark_room.DarkRoom):
    raise ValueError(
      'The coverage learner walks an (x, y) grid and needs a Dark Room '
      f'family env (dark_room, dark_room_hard); got {type(env).__name__}.'
    )
  num_actors = config.num_actors

  def train(key, task_params):
    size = task_params.size

    def _sweep_step(carry, key_t):
      memory, actors = carry
      key_explore, key_random, key_env = jax.random.split(key_t, 3)
      planned = jax.vmap(act)(memory, actors.obs)
      random = jax.random.randint(key_random, (num_actors,), 0, 5)
      explore = jax.random.uniform(key_explore, (num_actors,)) < config.epsilon
      action = jnp.where(explore, random, planned)
      # The cell entered; read off the dynamics because `next_obs` is
      # already the next episode's start when this step ended one.
      new_pos = jax.vmap(dark_room.grid_move, (0, 0, None))(
        actors.obs, action, size
      )
      actors, step = base.step_actors(env, task_params, key_env, actors, action)
      memory = jax.vmap(remember)(memory, new_pos, step.reward)
      return (memory, actors), step.history()

    key_reset, key_scan = jax.random.split(key)
    actors = base.reset_actors(env, task_params, key_reset, num_actors)
    memory = jax.vmap(lambda _: empty_memory(size))(jnp.arange(num_actors))
    keys = jax.random.split(key_scan, config.num_steps)
    (memory, _), history = jax.lax.scan(_sweep_step, (memory, actors), keys)
    return memory, base.stream_major(history)

  return train
