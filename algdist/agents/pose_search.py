"""Watermaze search: sweep the arena by pose, then go back to where it paid.

A scripted learner for Watermaze (algdist/envs/watermaze.py) whose
learning history improves within a few episodes, so that the improvement
fits in AD's context. It knows nothing of the platform but what its
rewards tell it, and it reads its own pose (position and heading) from the
environment's state, which AD never sees: AD sees only the frames.

Its memory, kept across episodes: which points of a fixed lattice over the
arena it has passed near, and the mean position of the steps that paid.
Until a step has paid it walks to the nearest lattice point it has not
passed near (Euclidean, from wherever it spawned), so its first episodes
sweep the arena; once a step has paid it walks straight back to the mean
paid position from every respawn, and each return pays again. A steering
rule turns toward the target and moves when facing it.

Why it exists: DQN's histories on Watermaze improve too slowly to show in
a context window (RESULTS.md, issue 21): across 150 steps they gain about
0.01 platform visits, and AD distilled from them stays flat. This source's
improvement, from a sweep to direct returns, happens inside the context.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from algdist.agents import base
from algdist.envs import watermaze


@dataclasses.dataclass(frozen=True)
class Config:
  """One searching learner's whole history."""

  num_steps: int = 800  # env steps per stream (T)
  num_actors: int = 1  # streams, each with its own memory and env copy
  # Side of the square lattice of sweep points (arena units); a point
  # counts as passed once the agent comes within `pass_radius` of it.
  spacing: float = 0.25
  pass_radius: float = 0.15  # arena units
  # Heading error (degrees) within which it moves straight ahead; up to
  # 3x this it turns and moves at once (actions 6, 7); beyond, it turns.
  aim: float = 15.0
  epsilon: float = 0.0  # probability of a uniform random action per step
  # The action the history asks the model to imitate: 'taken' (random or
  # not) or 'planned' (the searcher's own choice, also where epsilon
  # replaced it; History.target). With epsilon > 0 and 'planned', the
  # histories show recoveries from slips with no slip to copy, and the
  # previous action stops predicting the next one (a model that copies its
  # last action walks straight into the wall).
  imitate: str = 'taken'


CONFIGS = {'pose_search': Config()}
# Each actor keeps its own memory: a stream's episode is one episode of
# experience, however many actors run beside it (algdist.agents).
POOLS_ACTORS = False
RECORDS_STATE = True  # train(..., record_state=True) keeps its env states


@struct.dataclass
class Memory:
  """What one actor knows, across episodes."""

  passed: jax.Array  # [P] bool: lattice points it has come near
  paid_sum: jax.Array  # (2,) float32: sum of the positions that paid
  paid_count: jax.Array  # () float32: steps that paid


def validate(config: Config) -> None:
  """Raises ValueError naming any impossible field of `config`."""
  for field in ('num_steps', 'num_actors'):
    if getattr(config, field) < 1:
      raise ValueError(f'{field}={getattr(config, field)}: must be >= 1.')
  for field in ('spacing', 'pass_radius'):
    if not 0 < getattr(config, field) < 1:
      raise ValueError(
        f'{field}={getattr(config, field)}: must be in (0, 1) arena units.'
      )
  if not 0 < config.aim < 60:
    raise ValueError(f'aim={config.aim}: must be in (0, 60) degrees.')
  if not 0 <= config.epsilon <= 1:
    raise ValueError(f'epsilon={config.epsilon}: must be in [0, 1].')
  base.check_imitate(config.imitate)


def sweep_points(spacing: float, params: watermaze.EnvParams) -> np.ndarray:
  """(P, 2) the lattice points (spacing apart, one at the centre) that the
  agent's body can reach."""
  reach = params.arena_radius - params.body_radius
  k = math.floor(reach / spacing)
  axis = np.arange(-k, k + 1) * spacing
  x, y = np.meshgrid(axis, axis, indexing='xy')
  points = np.stack([x.ravel(), y.ravel()], -1)
  return points[np.linalg.norm(points, axis=-1) <= reach].astype(np.float32)


def steer(pos, heading, target, aim: float) -> jax.Array:
  """The action that takes an agent at (pos, heading) toward `target`."""
  delta = target - pos
  bearing = jnp.arctan2(delta[1], delta[0])
  error = jnp.mod(bearing - heading + math.pi, 2 * math.pi) - math.pi
  left = error > 0
  size = jnp.abs(error)
  aim = math.radians(aim)
  return jnp.where(
    size <= aim,
    0,  # forward
    jnp.where(size <= 3 * aim, jnp.where(left, 6, 7), jnp.where(left, 4, 5)),
  ).astype(jnp.int32)


def act(memory: Memory, pos, heading, points, aim: float) -> jax.Array:
  """The learner's action: back to where it was paid, else sweep on."""
  distance = jnp.linalg.norm(points - pos, axis=-1)
  nearest = points[jnp.argmin(jnp.where(memory.passed, jnp.inf, distance))]
  paid = memory.paid_sum / jnp.maximum(memory.paid_count, 1.0)
  target = jnp.where(memory.paid_count > 0, paid, nearest)
  return steer(pos, heading, target, aim)


def remember(
  memory: Memory, new_pos, reward, points, pass_radius: float
) -> Memory:
  """Memory after a step that took the agent to `new_pos` (before any
  respawn) and paid `reward`."""
  near = jnp.linalg.norm(points - new_pos, axis=-1) <= pass_radius
  passed = memory.passed | near
  # Swept everything and found nothing: sweep again.
  passed = jnp.where(passed.all(), near, passed)
  paid = reward > 0
  return Memory(
    passed=passed,
    paid_sum=memory.paid_sum + jnp.where(paid, new_pos, 0.0),
    paid_count=memory.paid_count + paid,
  )


def make_train(config: Config, env):
  """Returns `train(key, task_params) -> (Memory, History)`.

  Memory leaves are [num_actors, ...]; history leaves [num_actors,
  num_steps, ...].
  """
  validate(config)
  base.require_env(env, watermaze.Watermaze, 'pose_search')
  num_actors = config.num_actors

  def train(key, task_params, record_state: bool = False):
    # record_state: the history keeps each step's env state (videos).
    points = jnp.asarray(sweep_points(config.spacing, task_params))

    def _search_step(carry, key_t):
      memory, actors = carry
      key_explore, key_random, key_env = jax.random.split(key_t, 3)
      state = actors.env_state
      planned = jax.vmap(act, (0, 0, 0, None, None))(
        memory, state.pos, state.heading, points, config.aim
      )
      action = base.slip(
        key_explore, key_random, planned, config.epsilon, len(watermaze.ACTIONS)
      )
      # Where the step took it: read off the dynamics, because the env
      # state is already a respawn when the step paid.
      new_pos, _ = jax.vmap(watermaze.move, (0, 0, 0, None))(
        state.pos, state.heading, action, task_params
      )
      actors, step = base.step_actors(env, task_params, key_env, actors, action)
      memory = jax.vmap(remember, (0, 0, 0, None, None))(
        memory, new_pos, step.reward, points, config.pass_radius
      )
      return (memory, actors), base.record(
        step, planned, config.imitate, state if record_state else None
      )

    key_reset, key_scan = jax.random.split(key)
    actors = base.reset_actors(env, task_params, key_reset, num_actors)
    memory = Memory(
      passed=jnp.zeros((num_actors, points.shape[0]), bool),
      paid_sum=jnp.zeros((num_actors, 2), jnp.float32),
      paid_count=jnp.zeros((num_actors,), jnp.float32),
    )
    keys = jax.random.split(key_scan, config.num_steps)
    (memory, _), history = jax.lax.scan(_search_step, (memory, actors), keys)
    return memory, base.stream_major(history)

  return train
