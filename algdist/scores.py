"""Scores of in-context curves: what results.json says about each method.

`summarise` turns one method's returns on one split into its results.json
entry (DESIGN.md): the mean curve, its spread and standard error, the
fraction of optimal, regret and the first episode at 80%.
`ad_versus_learners` puts AD and each RL learner from scratch on one axis,
episodes of environment experience. Pure numpy: evaluation writes these,
reports and tests read them. Shape letters: see the glossary in
algdist/__init__.py.
"""

from __future__ import annotations

import numpy as np


def summarise(returns_NxRxE, optimal_N) -> dict:
  """One method on one split: the results.json entry (DESIGN.md)."""
  num_tasks, num_seeds, _ = returns_NxRxE.shape
  flat = returns_NxRxE.reshape(num_tasks * num_seeds, -1).astype(np.float64)
  # Keep the episodes every rollout finished (a short source run can end
  # before E); NaN never reaches the JSON.
  finished = np.all(np.isfinite(flat), axis=0)
  count = int(np.argmin(finished)) if not finished.all() else flat.shape[1]
  flat = flat[:, :count]
  mean, std = flat.mean(0), flat.std(0)
  entry = {
    'episode_returns': [float(x) for x in mean],
    'episode_returns_std': [float(x) for x in std],
    # Standard error of the mean over tasks x seeds: the uncertainty of the
    # curve itself (plots band it), where std is the spread of rollouts.
    'episode_returns_sem': [float(x) for x in std / np.sqrt(len(flat))],
    'last_episode_return': float(mean[-1]) if count else None,
    'num_tasks': int(num_tasks),
    'num_seeds': int(num_seeds),
    'num_episodes': count,
    **early_late(flat),
  }
  if optimal_N is not None and count:
    best = float(np.mean(optimal_N))
    entry['fraction_of_optimal'] = float(mean[-1] / max(best, 1e-12))
    # Regret: the return given up against the optimum, summed over episodes
    # (for a bandit, where a pull is an episode, the usual cumulative regret).
    entry['cumulative_regret'] = float(np.sum(best - mean))
    # Speed of in-context learning: the first episode (1-based) whose mean
    # return reaches 80% of optimal, or null if none does.
    reached = np.flatnonzero(mean >= 0.8 * best)
    entry['first_episode_reaching_80pct'] = (
      int(reached[0]) + 1 if reached.size else None
    )
  return entry


# Episodes averaged at each end of a curve for its in-context improvement.
EARLY_LATE_EPISODES = 4
# Two-sided 95% normal quantile: intervals are mean +- Z95 x standard error.
Z95 = 1.959964


def _interval(mean: float, sem: float) -> list[float]:
  return [float(mean - Z95 * sem), float(mean + Z95 * sem)]


def early_late(flat_RxE) -> dict:
  """The mean return of the first and of the last k episodes (k = 4, fewer
  for short curves) over rollouts, and their difference per rollout (paired:
  each rollout's own improvement) with its 95% interval; {} under 2
  episodes."""
  count = flat_RxE.shape[1]
  k = min(EARLY_LATE_EPISODES, count // 2)
  if k < 1:
    return {}
  early = flat_RxE[:, :k].mean(1)
  late = flat_RxE[:, count - k :].mean(1)
  sem = lambda x: float(x.std(ddof=1) / np.sqrt(len(x))) if len(x) > 1 else 0
  gain = late - early
  return {
    'early_late_episodes': k,
    'early_mean': float(early.mean()),
    'late_mean': float(late.mean()),
    'late_sem': sem(late),
    'late_minus_early': float(gain.mean()),
    'late_minus_early_ci95': _interval(gain.mean(), sem(gain)),
  }


def ad_late_versus(results: dict) -> dict:
  """AD's mean over its last k episodes against every other method's, per
  split: the difference with its 95% interval (independent rollouts) and
  the ratio; {} without AD."""
  methods = results['methods']
  out = {}
  for split, ad in methods.get('ad', {}).items():
    if 'late_mean' not in ad:
      continue
    rows = {}
    for name, by_split in methods.items():
      other = by_split.get(split)
      if name == 'ad' or other is None or 'late_mean' not in other:
        continue
      diff = ad['late_mean'] - other['late_mean']
      sem = float(np.hypot(ad['late_sem'], other['late_sem']))
      rows[name] = {
        'difference': float(diff),
        'difference_ci95': _interval(diff, sem),
        'ratio': float(ad['late_mean'] / other['late_mean'])
        if other['late_mean']
        else None,
      }
    if rows:
      out[split] = rows
  return out


def regret_over_experience(
  mean_E, per_episode: int, experience: int, best: float
) -> float | None:
  """Return given up against `best` over the first `experience` episodes of
  experience of a curve whose each episode cost `per_episode` of them (a
  learner pooling that many actors); None when the curve is shorter."""
  full, part = divmod(experience, per_episode)
  mean_E = np.asarray(mean_E, np.float64)
  if len(mean_E) < full + (part > 0):
    return None
  regret = per_episode * np.sum(best - mean_E[:full])
  if part:
    regret += part * (best - mean_E[full])
  return float(regret)


def ad_versus_learners(results: dict) -> dict:
  """AD against each RL learner run from scratch ('source', 'rl_baseline'),
  per split, on one axis: episodes of environment experience.

  For each: the experience each needs to first reach 80% of optimal and
  their ratio (learner / AD: how many times less experience AD needs), and
  the cumulative regret of both over the same experience, AD's horizon
  (ratio AD / learner: below 1, AD gave up less return).
  """
  methods = results['methods']
  ratio = lambda a, b: None if a is None or not b else float(a / b)
  out = {}
  for name in ('source', 'rl_baseline'):
    if 'ad' not in methods or name not in methods:
      continue
    by_split = {}
    for split, ad in methods['ad'].items():
      learner = methods[name].get(split)
      best = results['optimal_return'].get(split)
      if learner is None or best is None or not ad['episode_returns']:
        continue
      per = learner['episodes_of_experience_per_episode']
      # AD spends one episode of experience per point: its own entry's
      # first episode at 80% and regret are already on this axis.
      ad_80 = ad['first_episode_reaching_80pct']
      ad_regret = ad['cumulative_regret']
      first = learner['first_episode_reaching_80pct']
      learner_80 = None if first is None else first * per
      experience = len(ad['episode_returns'])
      learner_regret = regret_over_experience(
        learner['episode_returns'], per, experience, best
      )
      by_split[split] = {
        'algorithm': learner.get('algorithm'),
        'experience_episodes': experience,
        'ad_experience_to_80pct': ad_80,
        'learner_experience_to_80pct': learner_80,
        'experience_ratio': ratio(learner_80, ad_80),
        'ad_regret': ad_regret,
        'learner_regret': learner_regret,
        'regret_ratio': ratio(ad_regret, learner_regret),
      }
    if by_split:
      out[name] = by_split
  return out
