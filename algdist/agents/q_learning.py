"""Tabular Q-learning for tasks with small integer observations (grid worlds).

The table has one row per observation: every integer vector inside the
observation space's Box (for Dark Room, the 9x9 cells), so the observation
must be the whole state for this to be sound. Epsilon-greedy with epsilon
falling linearly over the history; greedy ties are broken at random, so an
untrained table acts uniformly at random rather than always taking action 0.

A learner's H actors act on one shared table and update it after every step,
one actor after another (each update sees the ones before it). Truncation is
treated as terminal, as everywhere in `algdist.agents`, unless
`bootstrap_truncated`: then a truncated step bootstraps from the next
episode's first observation, as if the stream of episodes were one
continuing task (Dark Room restarts in the same cell). With
`observe_episode_return` the table has a second row per observation for the
steps after the episode's first reward (Key-to-Door: holding the key).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from gymnax.environments import spaces

from algdist.agents import base

# Largest table (observations) built; beyond it tabular learning is hopeless.
MAX_TABLE_ROWS = 1_000_000


@dataclasses.dataclass(frozen=True)
class Config:
  """One Q-learner's whole run."""

  num_steps: int = 4000  # env steps per stream (T); 200 Dark Room episodes
  num_actors: int = 1  # streams acting together on one shared table
  learning_rate: float = 0.5  # step size of each Q update
  # Gamma per env step. 0.8, not 0.9: with 0.9, a quarter of Dark Room goals
  # ended in a greedy loop (off the goal and back) once epsilon reached 0.
  discount: float = 0.8
  epsilon_start: float = 1.0  # exploration probability at step 0
  epsilon_end: float = 0.0  # exploration probability once decayed
  # Fraction of the history over which epsilon falls linearly from start to
  # end; it stays at end afterwards.
  epsilon_decay_fraction: float = 0.5
  # Every Q value starts here; above the values reachable early (e.g. 1 on
  # Dark Room) it is optimistic and drives the greedy policy to untried
  # actions.
  initial_value: float = 1.0
  # Bootstrap through time-limit truncation (only `terminated` ends the
  # target): with optimistic values, a truncated episode then does not pull
  # the values of the cells it ended in towards 0.
  bootstrap_truncated: bool = False
  # Index the table by (observation, whether this episode has paid any
  # reward yet): two rows per observation. On Dark Key-to-Door that bit is
  # "holds the key", which (x, y) alone cannot tell (PPO's
  # observe_episode_return, for a table).
  observe_episode_return: bool = False


CONFIGS = {'q_learning': Config()}


@struct.dataclass
class QState:
  """What a Q-learner knows."""

  q: jax.Array  # [observations, A] float32: one row per observation
  epsilon: jax.Array  # () float32: the last step's exploration probability


def validate(config: Config) -> None:
  """Raises ValueError naming any impossible field of `config`."""
  for field in ('num_steps', 'num_actors'):
    if getattr(config, field) < 1:
      raise ValueError(f'{field}={getattr(config, field)}: must be >= 1.')
  for field in ('learning_rate', 'discount', 'epsilon_start', 'epsilon_end'):
    value = getattr(config, field)
    if not 0 <= value <= 1:
      raise ValueError(f'{field}={value}: must be in [0, 1].')
  if not 0 < config.epsilon_decay_fraction <= 1:
    raise ValueError(
      f'epsilon_decay_fraction={config.epsilon_decay_fraction}: must be in '
      '(0, 1].'
    )


def table_layout(env, params) -> tuple[np.ndarray, np.ndarray, int]:
  """(low, strides, rows) indexing a table by the env's integer observation.

  Raises ValueError unless observations are small integer vectors in a Box.
  """
  space = env.observation_space(params)
  name = type(env).__name__
  if not isinstance(space, spaces.Box):
    raise ValueError(
      f'Tabular Q-learning needs a Box observation space; {name} has '
      f'{type(space).__name__}.'
    )
  shape = tuple(space.shape)
  if len(shape) != 1 or not jnp.issubdtype(space.dtype, jnp.integer):
    raise ValueError(
      'Tabular Q-learning needs observations that are small integer '
      f'vectors; {name} observes shape {shape} of {np.dtype(space.dtype)}.'
    )
  try:
    low = np.broadcast_to(np.asarray(space.low), shape).astype(np.int64)
    high = np.broadcast_to(np.asarray(space.high), shape).astype(np.int64)
  except (
    TypeError,
    jax.errors.ConcretizationTypeError,
    jax.errors.TracerArrayConversionError,
  ) as error:
    raise ValueError(
      f'Tabular Q-learning needs static observation bounds; {name} bounds '
      'depend on the task.'
    ) from error
  sizes = high - low + 1
  rows = int(np.prod(sizes.astype(np.float64)))
  if np.any(sizes < 1) or rows > MAX_TABLE_ROWS:
    raise ValueError(
      f'Tabular Q-learning needs few observations; {name} has '
      f'{rows:.3g} (bounds {low.tolist()} to {high.tolist()}), more than '
      f'{MAX_TABLE_ROWS}.'
    )
  # Row-major strides: the last observation entry varies fastest.
  strides = np.concatenate([np.cumprod(sizes[::-1])[::-1][1:], [1]])
  return low.astype(np.int32), strides.astype(np.int32), rows


def _discrete_actions(env, params) -> int:
  space = env.action_space(params)
  if not isinstance(space, spaces.Discrete):
    raise ValueError(
      f'Tabular Q-learning needs discrete actions; {type(env).__name__} has '
      f'{type(space).__name__}.'
    )
  return space.n


def epsilon_at(config: Config, step: jax.Array) -> jax.Array:
  """Exploration probability at env step `step` of a stream."""
  decay_steps = config.epsilon_decay_fraction * config.num_steps
  progress = jnp.minimum(step / decay_steps, 1.0)
  return config.epsilon_start + progress * (
    config.epsilon_end - config.epsilon_start
  )


def make_train(config: Config, env):
  """Returns `train(key, task_params) -> (QState, History)` for `config`.

  History leaves are [num_actors, num_steps, ...]. Raises ValueError here
  for an env whose observations cannot index a table.
  """
  validate(config)
  # Fail now rather than at the first call; `train` re-derives the layout
  # from its task params, whose static fields set the shapes.
  table_layout(env, env.default_params)
  _discrete_actions(env, env.default_params)
  num_actors = config.num_actors

  def train(key, task_params):
    low, strides, obs_rows = table_layout(env, task_params)
    num_actions = _discrete_actions(env, task_params)
    paid_rows = 2 if config.observe_episode_return else 1
    rows = obs_rows * paid_rows

    def row_of(obs, ep_return):
      row = ((obs.astype(jnp.int32) - low) * strides).sum(-1)
      if config.observe_episode_return:
        row = row + obs_rows * (ep_return > 0)
      return row

    def _update_one(q, transition):
      row, action, reward, done, next_row = transition
      target = reward + config.discount * (1.0 - done) * q[next_row].max()
      error = target - q[row, action]
      return q.at[row, action].add(config.learning_rate * error), None

    def _update_step(carry, xs):
      q, actors, ep_return = carry  # ep_return [H]: this episode's so far
      key_t, t = xs
      key_explore, key_random, key_tie, key_env = jax.random.split(key_t, 4)
      epsilon = epsilon_at(config, t)
      row = row_of(actors.obs, ep_return)
      values = q[row]  # [H, A]
      # Uniform picks among each actor's greedy actions.
      noise = jax.random.uniform(key_tie, values.shape)
      is_max = values == values.max(-1, keepdims=True)
      greedy = jnp.argmax(jnp.where(is_max, noise, -1.0), -1)
      random = jax.random.randint(key_random, (num_actors,), 0, num_actions)
      explore = jax.random.uniform(key_explore, (num_actors,)) < epsilon
      action = jnp.where(explore, random, greedy)
      actors, step = base.step_actors(env, task_params, key_env, actors, action)
      ends = step.terminated if config.bootstrap_truncated else step.done
      # next_obs opens the next episode where this one ended (auto-reset).
      ep_return = jnp.where(step.done, 0.0, ep_return + step.reward)
      transitions = (
        row,
        step.action,
        step.reward,
        ends.astype(jnp.float32),
        row_of(step.next_obs, ep_return),
      )
      q, _ = jax.lax.scan(_update_one, q, transitions)
      return (q, actors, ep_return), (step.history(), epsilon)

    key_reset, key_scan = jax.random.split(key)
    actors = base.reset_actors(env, task_params, key_reset, num_actors)
    q = jnp.full((rows, num_actions), config.initial_value, jnp.float32)
    xs = (
      jax.random.split(key_scan, config.num_steps),
      jnp.arange(config.num_steps),
    )
    ep_return = jnp.zeros((num_actors,), jnp.float32)
    carry = (q, actors, ep_return)
    (q, _, _), (history, epsilon) = jax.lax.scan(_update_step, carry, xs)
    state = QState(q=q, epsilon=epsilon[-1])
    return state, base.stream_major(history)

  return train
