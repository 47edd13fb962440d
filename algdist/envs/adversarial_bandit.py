"""Adversarial Bandit: 10 Bernoulli arms whose best arm moves between splits.

An episode is one pull; the observation is a constant (there is nothing to
see). A task is the vector of arm means. Each task draws the means uniformly in
[0, 1], then puts the best arm at an odd index with probability 0.95 for
training tasks and at an even index with probability 0.95 for test tasks: only
where the reward is changes between the splits (see PAPER.md).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from gymnax.environments import spaces

from algdist.envs import base


@struct.dataclass
class EnvState:
  time: jax.Array  # () int32: pulls in this episode


@struct.dataclass
class EnvParams:
  means: jax.Array = struct.field(
    default_factory=lambda: jnp.full((10,), 0.5, jnp.float32)
  )  # (num_arms,) float32 success probability of each arm: the task
  num_arms: int = struct.field(pytree_node=False, default=10)
  max_steps_in_episode: int = struct.field(pytree_node=False, default=1)
  # Probability that the best arm sits at an odd index (train) or at an even
  # index (test).
  shift_prob: float = struct.field(pytree_node=False, default=0.95)
  split_seed: int = struct.field(pytree_node=False, default=0)


class AdversarialBandit(base.TaskFamily):
  """Adversarial Bandit."""

  @property
  def name(self) -> str:
    return 'adversarial_bandit'

  @property
  def default_params(self) -> EnvParams:
    return EnvParams()

  @property
  def num_actions(self) -> int:
    return self.default_params.num_arms

  def action_space(self, params: EnvParams | None = None) -> spaces.Discrete:
    params = params or self.default_params
    return spaces.Discrete(params.num_arms)

  def observation_space(self, params: EnvParams) -> spaces.Box:
    return spaces.Box(0, 0, (1,), jnp.int32)

  def reset_env(self, key, params: EnvParams):
    return jnp.zeros((1,), jnp.int32), EnvState(time=jnp.int32(0))

  def step_env(self, key, state: EnvState, action, params: EnvParams):
    reward = jax.random.bernoulli(key, params.means[action]).astype(jnp.float32)
    state = EnvState(time=state.time + 1)
    return jnp.zeros((1,), jnp.int32), state, reward, jnp.bool_(False), {}

  def optimal_action(self, state: EnvState, params: EnvParams) -> jax.Array:
    return jnp.argmax(params.means).astype(jnp.int32)

  def validate(self, params: EnvParams) -> None:
    base.require(
      params.num_arms >= 2, f'num_arms={params.num_arms}: must be >= 2.'
    )
    base.require(
      params.max_steps_in_episode >= 1,
      f'max_steps_in_episode={params.max_steps_in_episode}: must be >= 1.',
    )
    base.require(
      0.0 <= params.shift_prob <= 1.0,
      f'shift_prob={params.shift_prob}: must be a probability in [0, 1].',
    )
    means = np.asarray(params.means)
    base.require(
      means.shape[-1:] == (params.num_arms,)
      and bool(np.all((means >= 0) & (means <= 1))),
      f'means of shape {means.shape}: must hold {params.num_arms} '
      'probabilities in [0, 1].',
    )

  def tasks(self, params: EnvParams, split, num=None, seed=0) -> EnvParams:
    base.check_split(split)
    base.require(
      num is not None and num >= 1,
      f'num={num}: bandit tasks are continuous; ask for a number of them.',
    )
    # The split seed picks the family; `seed` the draw; the split its stream.
    rng = np.random.default_rng([params.split_seed, seed, int(split == 'test')])
    k = params.num_arms
    means = rng.uniform(size=(num, k))
    # Best arm's parity: odd for train, even for test, with prob shift_prob.
    odd = np.arange(1, k, 2)
    even = np.arange(0, k, 2)
    preferred, other = (odd, even) if split == 'train' else (even, odd)
    use_preferred = rng.uniform(size=num) < params.shift_prob
    best_slot = np.where(
      use_preferred,
      preferred[rng.integers(len(preferred), size=num)],
      other[rng.integers(len(other), size=num)],
    )
    # Swap each row's maximum into its chosen slot.
    rows = np.arange(num)
    argmax = means.argmax(-1)
    top = means[rows, argmax].copy()
    means[rows, argmax] = means[rows, best_slot]
    means[rows, best_slot] = top
    return base.batch_replace(params, means=means.astype(np.float32))

  def optimal_return(self, params: EnvParams) -> jax.Array:
    """Always pulling the best arm: its mean per pull."""
    return params.max_steps_in_episode * params.means.max(-1)

  def plot_learning_curve(
    self, history, length, tasks, task_index, title: str, path: str
  ) -> dict:
    """A pull is an episode: plots reward per pull and regret from the arm
    means rather than 0/1 samples, over the pulls every history kept."""
    means_HxA = np.asarray(tasks.means)[task_index]
    action_HxT = np.asarray(history.action)[:, : int(np.min(length))]
    return _plot_learning_curve(action_HxT, means_HxA, title, path)


def _plot_learning_curve(action_HxT, means_HxA, title: str, path: str) -> dict:
  """Plots a bandit source's learning: reward per pull and cumulative regret.

  Both use the pulled arm's mean rather than its sampled 0/1 reward, so the
  curves show what the learner chose, free of Bernoulli noise. Returns the
  figures, with the keys of `report.source_learning_curve` (as fractions of
  the best arm's mean) and the regret.
  """
  action = np.asarray(action_HxT)
  means = np.asarray(means_HxA, np.float64)
  expected_HxT = np.take_along_axis(means, action, 1)
  best_H = means.max(1)
  regret_HxT = np.cumsum(best_H[:, None] - expected_HxT, 1)
  pulls = np.arange(1, action.shape[1] + 1)
  from matplotlib import figure  # noqa: PLC0415  (only when plotting)

  # A Figure of its own, not pyplot's: no backend and no global state.
  fig = figure.Figure(figsize=(9, 3.6), dpi=120)
  left, right = fig.subplots(1, 2)
  left.plot(pulls, expected_HxT.mean(0), lw=2, label='mean of pulled arm')
  left.axhline(best_H.mean(), color='k', ls='--', lw=1, label='best arm')
  left.axhline(means.mean(), color='grey', ls=':', lw=1, label='random arm')
  left.set(xlabel='pull', ylabel='expected reward per pull', ylim=(0, 1))
  left.legend(loc='lower right', fontsize=8)
  low, high = np.percentile(regret_HxT, [10, 90], axis=0)
  right.fill_between(pulls, low, high, alpha=0.25, label='10-90th percentile')
  right.plot(pulls, regret_HxT.mean(0), lw=2, label='mean over histories')
  # A uniformly random puller loses best - average arm mean on every pull.
  random_regret = pulls * (best_H - means.mean(1)).mean()
  right.plot(
    pulls, random_regret, color='grey', ls=':', lw=1, label='random arm'
  )
  right.set(xlabel='pull', ylabel='cumulative regret')
  right.legend(loc='upper left', fontsize=8)
  for ax in (left, right):
    ax.grid(alpha=0.3)
  fig.suptitle(title, fontsize=9)
  fig.tight_layout()
  fig.savefig(path)
  fraction_HxT = expected_HxT / best_H[:, None]
  last10 = fraction_HxT[:, -10:].mean(1)
  half = action.shape[1] // 2
  return {
    'num_histories': int(action.shape[0]),
    'num_episodes': int(action.shape[1]),
    'min_episodes': int(action.shape[1]),
    'normalized': True,
    'mean_first_episode': float(fraction_HxT[:, 0].mean()),
    'mean_last_episode': float(fraction_HxT[:, -1].mean()),
    'mean_last_10_episodes': float(last10.mean()),
    'min_last_10_episodes': float(last10.min()),
    'mean_per_episode': [float(x) for x in fraction_HxT.mean(0)],
    'fraction_of_histories_reaching_90pct': float(np.mean(last10 >= 0.9)),
    'mean_best_arm': float(best_H.mean()),
    'mean_random_arm': float(means.mean()),
    'mean_cumulative_regret': [float(x) for x in regret_HxT.mean(0)],
    # Regret added in the second half over the first: 1 is linear, less is
    # sublinear (a learner that stops paying for exploration).
    'regret_second_half_over_first': float(
      (regret_HxT[:, -1] - regret_HxT[:, half - 1]).mean()
      / regret_HxT[:, half - 1].mean()
    ),
  }
