"""UCB1 and Beta-Bernoulli Thompson sampling for multi-armed bandits.

Built for the Adversarial Bandit, where every pull is an episode, but any env
with discrete actions and rewards in [0, 1] works: each step is one pull of
the arm named by the action. A learner's H actors pull in parallel and share
one set of arm statistics, updated with all H rewards after every step.

- `ucb`: UCB1 (Auer et al. 2002). Pull an arm never pulled, else the arm
  maximising mean + c * sqrt(2 ln t / n), with t the learner's pulls so far
  and n the arm's; c = 1 is UCB1. Ties (untried arms, equal indices) are
  broken uniformly at random, so every arm is pulled once first, in a random
  order.
- `thompson`: Beta-Bernoulli Thompson sampling. Each actor draws one mean per
  arm from its Beta posterior and pulls the largest.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import struct
from gymnax.environments import spaces

from algdist.agents import base

ALGORITHMS = ('ucb', 'thompson')


@dataclasses.dataclass(frozen=True)
class Config:
  """One bandit learner's whole run."""

  algorithm: str = 'ucb'  # 'ucb' (UCB1) or 'thompson' (Beta-Bernoulli)
  num_pulls: int = 100  # pulls per stream (T); a pull is an episode here
  num_actors: int = 1  # streams pulling together, sharing the statistics
  # UCB: c in mean + c * sqrt(2 ln t / n); 1 is UCB1, 0 is greedy.
  exploration: float = 1.0
  # Thompson: Beta(prior_successes, prior_failures) prior on every arm's
  # mean; (1, 1) is uniform.
  prior_successes: float = 1.0
  prior_failures: float = 1.0


CONFIGS = {
  'ucb': Config(algorithm='ucb'),
  'thompson': Config(algorithm='thompson'),
}


@struct.dataclass
class ArmStats:
  """What a bandit learner knows: per-arm pull counts and reward sums."""

  pulls: jax.Array  # [A] float32: times each arm was pulled
  reward_sums: jax.Array  # [A] float32: total reward each arm paid


def validate(config: Config) -> None:
  """Raises ValueError naming any impossible field of `config`."""
  if config.algorithm not in ALGORITHMS:
    raise ValueError(
      f"algorithm='{config.algorithm}': must be one of {ALGORITHMS}."
    )
  for field in ('num_pulls', 'num_actors'):
    if getattr(config, field) < 1:
      raise ValueError(f'{field}={getattr(config, field)}: must be >= 1.')
  if config.exploration < 0:
    raise ValueError(f'exploration={config.exploration}: must be >= 0.')
  if min(config.prior_successes, config.prior_failures) <= 0:
    raise ValueError(
      f'prior_successes={config.prior_successes}, prior_failures='
      f'{config.prior_failures}: Beta prior counts must be > 0.'
    )


def ucb_actions(key: jax.Array, stats: ArmStats, exploration, num: int):
  """`num` UCB1 choices [num] on `stats`, ties broken at random."""
  n = jnp.maximum(stats.pulls, 1.0)
  t = jnp.maximum(stats.pulls.sum(), 1.0)
  index = stats.reward_sums / n + exploration * jnp.sqrt(2 * jnp.log(t) / n)
  index = jnp.where(stats.pulls == 0, jnp.inf, index)
  return _random_argmax(key, index, num)


def thompson_actions(key, stats: ArmStats, prior, num: int):
  """`num` Thompson choices [num]: argmax of one posterior draw each."""
  alpha = prior[0] + stats.reward_sums
  beta = prior[1] + stats.pulls - stats.reward_sums
  draws = jax.random.beta(key, alpha, beta, (num, alpha.shape[0]))
  return jnp.argmax(draws, -1).astype(jnp.int32)


def _random_argmax(key, values, num: int):
  """`num` independent uniform picks [num] among the maxima of `values`."""
  noise = jax.random.uniform(key, (num, values.shape[0]))
  return jnp.argmax(jnp.where(values == values.max(), noise, -1.0), -1).astype(
    jnp.int32
  )


def make_train(config: Config, env):
  """Returns `train(key, task_params) -> (ArmStats, History)` for `config`.

  History leaves are [num_actors, num_pulls, ...].
  """
  validate(config)
  num_actors = config.num_actors
  prior = (config.prior_successes, config.prior_failures)

  def train(key, task_params):
    space = env.action_space(task_params)
    if not isinstance(space, spaces.Discrete):
      raise ValueError(
        f'{config.algorithm} needs discrete actions (arms); '
        f'{type(env).__name__} has {type(space).__name__}.'
      )
    num_arms = space.n
    key_reset, key_scan = jax.random.split(key)
    actors = base.reset_actors(env, task_params, key_reset, num_actors)
    stats = ArmStats(
      pulls=jnp.zeros((num_arms,), jnp.float32),
      reward_sums=jnp.zeros((num_arms,), jnp.float32),
    )

    def _pull_step(carry, key_t):
      stats, actors = carry
      key_act, key_env = jax.random.split(key_t)
      if config.algorithm == 'ucb':
        action = ucb_actions(key_act, stats, config.exploration, num_actors)
      else:
        action = thompson_actions(key_act, stats, prior, num_actors)
      actors, step = base.step_actors(env, task_params, key_env, actors, action)
      pulled = jax.nn.one_hot(step.action, num_arms, dtype=jnp.float32)
      stats = ArmStats(
        pulls=stats.pulls + pulled.sum(0),
        reward_sums=stats.reward_sums + (step.reward[:, None] * pulled).sum(0),
      )
      return (stats, actors), step.history()

    keys = jax.random.split(key_scan, config.num_pulls)
    (stats, _), history = jax.lax.scan(_pull_step, (stats, actors), keys)
    return stats, base.stream_major(history)

  return train
