"""Dyna-Q on Watermaze: tabular model-based RL over a discretised pose.

A reinforcement learner for Watermaze (algdist/envs/watermaze.py) whose
learning history improves within a few episodes, so that the improvement
fits in AD's context. It acts from the agent's pose (position and heading),
read from the environment's state, which AD never sees: AD sees only the
frames. It knows nothing of the platform but what its rewards tell it.

State: a cell of a square lattice over the arena and a heading bin. Its
model, learned from experience and kept across episodes, has two parts:
where each (state, action) leads (the last observed next state; an untried
pair is predicted by moving from the state's centre, a kinematic prior),
and how often arriving in each cell has paid. A paying step respawns the
agent, so pay ends the path (no bootstrap). Arriving in a cell never
arrived in is assumed to pay `optimism` (R-max), or to lead on if that is
worth more: this drives a sweep of the arena, nearest unknown cell first,
and lets paths back to the platform cross unknown cells. Before every env
step it runs `planning_sweeps` sweeps of value iteration on the model,
warm-started from the last values, then acts greedily (random
tie-breaking). Once a cell has paid, its value, above `optimism` from
nearby, draws the agent back to it from every respawn.

Why it exists: DQN's histories on Watermaze improve too slowly to show in
a context window (RESULTS.md, issue 21): across 150 steps they gain about
0.01 platform visits, and AD distilled from them stays flat. This
learner's rise, from a sweep to direct returns, happens inside the context.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
from flax import struct

from algdist.agents import base
from algdist.envs import watermaze


@dataclasses.dataclass(frozen=True)
class Config:
  """One Dyna-Q learner's whole history."""

  num_steps: int = 800  # env steps per stream (T)
  num_actors: int = 1  # streams, each with its own model and env copy
  # Side of the square position cells (arena units). Below step_size *
  # sqrt(2), so that a prior move from a cell's centre leaves the cell.
  cell: float = 0.1
  heading_bins: int = 12  # equal heading bins, one centred on 0 radians
  discount: float = 0.95  # gamma per env step
  # Reward assumed for arriving in a cell never arrived in (R-max): drives
  # the sweep; below what a known platform a few steps away is worth.
  optimism: float = 0.2
  # Value-iteration sweeps after every env step, warm-started from the last
  # values. 1 did as well as 2 or 4 and runs 3x faster than 2.
  planning_sweeps: int = 1
  epsilon: float = 0.0  # probability of a uniform random action per step
  # Among equally valued actions: 'random' (uniform), or 'forward' (walk
  # on if that is one of them, else move and turn, else turn, else strafe
  # or back up; uniform within a level): fewer jittery steps, so paths
  # a model can read off the frames.
  tie_break: str = 'random'
  # The action the history asks the model to imitate: 'taken' (the
  # epsilon-greedy one) or 'planned' (the greedy one, also where epsilon
  # replaced it; History.target), as pose_search.Config.imitate.
  imitate: str = 'taken'


CONFIGS = {'dyna_q': Config()}
# Each actor keeps its own memory: a stream's episode is one episode of
# experience, however many actors run beside it (algdist.agents).
POOLS_ACTORS = False
RECORDS_STATE = True  # train(..., record_state=True) keeps its env states
TIE_BREAKS = ('random', 'forward')
# Preference level of each action under tie_break='forward' (watermaze
# ACTIONS order): forward, then move and turn, then turn, then the rest.
_LEVEL = jnp.array([3, 0, 0, 0, 1, 1, 2, 2], jnp.float32)


@struct.dataclass
class Model:
  """What one actor has learned, across episodes; S states, C cells."""

  next_state: jax.Array  # [S, A] int32: where each (state, action) leads
  arrivals: jax.Array  # [C] float32: steps that ended in each cell
  pays: jax.Array  # [C] float32: of those, the steps that paid
  value: jax.Array  # [S] float32: state values, kept to warm-start planning


def validate(config: Config) -> None:
  """Raises ValueError naming any impossible field of `config`."""
  for field in ('num_steps', 'num_actors', 'heading_bins'):
    if getattr(config, field) < 1:
      raise ValueError(f'{field}={getattr(config, field)}: must be >= 1.')
  if config.planning_sweeps < 0:
    raise ValueError(f'planning_sweeps={config.planning_sweeps}: must be >= 0.')
  if not 0 < config.cell < 1:
    raise ValueError(f'cell={config.cell}: must be in (0, 1) arena units.')
  if not 0 <= config.discount < 1:
    raise ValueError(f'discount={config.discount}: must be in [0, 1).')
  if not 0 <= config.optimism <= 1:
    raise ValueError(f'optimism={config.optimism}: must be in [0, 1].')
  if not 0 <= config.epsilon <= 1:
    raise ValueError(f'epsilon={config.epsilon}: must be in [0, 1].')
  if config.tie_break not in TIE_BREAKS:
    raise ValueError(
      f"tie_break='{config.tie_break}': must be one of {TIE_BREAKS}."
    )
  base.check_imitate(config.imitate)


def lattice_size(config: Config, params: watermaze.EnvParams) -> int:
  """Cells per side of the square lattice that covers the arena."""
  return math.ceil(2 * params.arena_radius / config.cell - 1e-6)


def state_index(pos, heading, config: Config, params: watermaze.EnvParams):
  """(state, cell) indices of the pose (pos, heading)."""
  n = lattice_size(config, params)
  ij = jnp.floor((pos + params.arena_radius) / config.cell).astype(jnp.int32)
  cell = jnp.clip(ij[..., 1], 0, n - 1) * n + jnp.clip(ij[..., 0], 0, n - 1)
  width = 2 * math.pi / config.heading_bins
  heading_bin = jnp.round(heading / width).astype(jnp.int32)
  heading_bin = jnp.mod(heading_bin, config.heading_bins)
  return cell * config.heading_bins + heading_bin, cell


def prior_next_state(config: Config, params: watermaze.EnvParams):
  """[S, A] the state each action leads to from each state's centre pose."""
  n, h = lattice_size(config, params), config.heading_bins
  centre = -params.arena_radius + (jnp.arange(n) + 0.5) * config.cell
  x = jnp.tile(centre, n)  # cell = row * n + column
  y = jnp.repeat(centre, n)
  pos = jnp.repeat(jnp.stack([x, y], -1), h, 0)  # [S, 2]
  heading = jnp.tile(jnp.arange(h) * (2 * math.pi / h), n * n)  # [S]
  actions = jnp.arange(len(watermaze.ACTIONS))
  move = jax.vmap(
    jax.vmap(watermaze.move, (None, None, 0, None)), (0, 0, None, None)
  )
  new_pos, new_heading = move(pos, heading, actions, params)
  return state_index(new_pos, new_heading, config, params)[0]


def arrival_values(model: Model, value, config: Config) -> jax.Array:
  """[S] what arriving in each state is worth: its cell's pay rate ends the
  path (a paying step respawns the agent), else the agent goes on from
  there; a cell never arrived in may pay `optimism` or lead on."""
  seen = (model.arrivals > 0)[:, None]
  pay = (model.pays / jnp.maximum(model.arrivals, 1.0))[:, None]
  go_on = config.discount * value.reshape(-1, config.heading_bins)
  arrive = jnp.where(
    seen, pay + (1 - pay) * go_on, jnp.maximum(config.optimism, go_on)
  )
  return arrive.reshape(-1)


def plan(model: Model, config: Config) -> Model:
  """`planning_sweeps` sweeps of value iteration on the learned model."""
  value = model.value
  for _ in range(config.planning_sweeps):
    value = arrival_values(model, value, config)[model.next_state].max(-1)
  return model.replace(value=value)


def action_values(model: Model, state, config: Config) -> jax.Array:
  """[A] the values of each action from `state` under the model."""
  arrive = arrival_values(model, model.value, config)
  return arrive[model.next_state[state]]


def learn(model: Model, state, action, new_state, new_cell, reward) -> Model:
  """The model after `action` from `state` ended in (new_state, new_cell)
  (before any respawn) and paid `reward`."""
  return model.replace(
    next_state=model.next_state.at[state, action].set(new_state),
    arrivals=model.arrivals.at[new_cell].add(1.0),
    pays=model.pays.at[new_cell].add(reward),
  )


def make_train(config: Config, env):
  """Returns `train(key, task_params) -> (Model, History)`.

  Model leaves are [num_actors, ...]; history leaves [num_actors,
  num_steps, ...].
  """
  validate(config)
  base.require_env(env, watermaze.Watermaze, 'dyna_q')
  num_actors = config.num_actors
  num_actions = len(watermaze.ACTIONS)

  def train(key, task_params, record_state: bool = False):
    # record_state: the history keeps each step's env state (videos).
    index = lambda pos, heading: state_index(pos, heading, config, task_params)

    def act(model, state, key):
      q = action_values(model, state, config)
      best = q >= q.max() - 1e-6
      score = jax.random.uniform(key, q.shape)
      if config.tie_break == 'forward':
        score = score + _LEVEL
      return jnp.argmax(jnp.where(best, score, -1))

    def _dyna_step(carry, key_t):
      model, actors = carry
      key_act, key_explore, key_random, key_env = jax.random.split(key_t, 4)
      env_state = actors.env_state
      state, _ = index(env_state.pos, env_state.heading)
      model = jax.vmap(plan, (0, None))(model, config)
      greedy = jax.vmap(act)(
        model, state, jax.random.split(key_act, num_actors)
      )
      action = base.slip(
        key_explore, key_random, greedy, config.epsilon, num_actions
      )
      # Where the step took it: read off the dynamics, because the env
      # state is already a respawn when the step paid.
      new_pos, new_heading = jax.vmap(watermaze.move, (0, 0, 0, None))(
        env_state.pos, env_state.heading, action, task_params
      )
      new_state, new_cell = index(new_pos, new_heading)
      actors, step = base.step_actors(env, task_params, key_env, actors, action)
      model = jax.vmap(learn)(
        model, state, action, new_state, new_cell, step.reward
      )
      planned = greedy.astype(jnp.int32)
      return (model, actors), base.record(
        step, planned, config.imitate, env_state if record_state else None
      )

    key_reset, key_scan = jax.random.split(key)
    actors = base.reset_actors(env, task_params, key_reset, num_actors)
    prior = prior_next_state(config, task_params)
    num_cells = lattice_size(config, task_params) ** 2
    model = Model(
      next_state=prior,
      arrivals=jnp.zeros((num_cells,), jnp.float32),
      pays=jnp.zeros((num_cells,), jnp.float32),
      value=jnp.full((prior.shape[0],), config.optimism, jnp.float32),
    )
    model = jax.tree.map(lambda x: jnp.repeat(x[None], num_actors, 0), model)
    keys = jax.random.split(key_scan, config.num_steps)
    (model, _), history = jax.lax.scan(_dyna_step, (model, actors), keys)
    return model, base.stream_major(history)

  return train
