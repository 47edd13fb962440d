"""AD-epsilon (Zisman et al. 2023): learning-like histories without RL.

A demonstrator acts with the env's optimal policy, `env.optimal_action`, but
takes a uniform random action with probability epsilon; epsilon falls
linearly from `epsilon_start` to `epsilon_end` over the first
`anneal_fraction` of the history and stays there. With the defaults (1 -> 0)
the history goes from a random walk to optimal episodes, which AD can distil
like a learner's history. Nothing is learned: the final state only reports
the last epsilon. Works for any env with `optimal_action` and discrete
actions. Epsilon follows env steps, not episodes, so it also serves envs
whose episodes vary in length.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import struct
from gymnax.environments import spaces

from algdist.agents import base


@dataclasses.dataclass(frozen=True)
class Config:
  """One noisy demonstrator's whole history."""

  num_steps: int = 4000  # env steps per stream (T); 200 Dark Room episodes
  num_actors: int = 1  # streams, each with its own env copy
  epsilon_start: float = 1.0  # random-action probability at step 0
  epsilon_end: float = 0.0  # random-action probability once annealed
  # Fraction of the history over which epsilon falls linearly; the rest is
  # acted at epsilon_end (optimal episodes with the defaults).
  anneal_fraction: float = 0.9


CONFIGS = {'noise_distillation': Config()}


@struct.dataclass
class DemonstratorState:
  """All there is to report: the demonstrator learns nothing."""

  epsilon: jax.Array  # () float32: the last step's random-action probability


def validate(config: Config) -> None:
  """Raises ValueError naming any impossible field of `config`."""
  for field in ('num_steps', 'num_actors'):
    if getattr(config, field) < 1:
      raise ValueError(f'{field}={getattr(config, field)}: must be >= 1.')
  for field in ('epsilon_start', 'epsilon_end'):
    value = getattr(config, field)
    if not 0 <= value <= 1:
      raise ValueError(f'{field}={value}: must be in [0, 1].')
  if not 0 < config.anneal_fraction <= 1:
    raise ValueError(
      f'anneal_fraction={config.anneal_fraction}: must be in (0, 1].'
    )


def epsilon_at(config: Config, step: jax.Array) -> jax.Array:
  """Random-action probability at env step `step` of a stream."""
  progress = jnp.minimum(step / (config.anneal_fraction * config.num_steps), 1)
  return config.epsilon_start + progress * (
    config.epsilon_end - config.epsilon_start
  )


def make_train(config: Config, env):
  """Returns `train(key, task_params) -> (DemonstratorState, History)`.

  History leaves are [num_actors, num_steps, ...].
  """
  validate(config)
  num_actors = config.num_actors

  def train(key, task_params):
    space = env.action_space(task_params)
    if not isinstance(space, spaces.Discrete):
      raise ValueError(
        'Noise distillation needs discrete actions; '
        f'{type(env).__name__} has {type(space).__name__}.'
      )
    optimal_action = jax.vmap(env.optimal_action, in_axes=(0, None))

    def _demo_step(actors, xs):
      key_t, t = xs
      key_explore, key_random, key_env = jax.random.split(key_t, 3)
      epsilon = epsilon_at(config, t)
      best = optimal_action(actors.env_state, task_params)
      random = jax.random.randint(key_random, (num_actors,), 0, space.n)
      explore = jax.random.uniform(key_explore, (num_actors,)) < epsilon
      action = jnp.where(explore, random, best)
      actors, step = base.step_actors(env, task_params, key_env, actors, action)
      return actors, (step.history(), epsilon)

    key_reset, key_scan = jax.random.split(key)
    actors = base.reset_actors(env, task_params, key_reset, num_actors)
    xs = (
      jax.random.split(key_scan, config.num_steps),
      jnp.arange(config.num_steps),
    )
    _, (history, epsilon) = jax.lax.scan(_demo_step, actors, xs)
    state = DemonstratorState(epsilon=epsilon[-1].astype(jnp.float32))
    return state, base.stream_major(history)

  return train
