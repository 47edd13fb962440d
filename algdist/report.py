"""Plots and summaries people read: learning curves, results, videos."""

from __future__ import annotations

import matplotlib

matplotlib.use('Agg')  # files only; no display needed

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def source_learning_curve(curve_HxE, optimal_H, title: str, path: str) -> dict:
  """Plots the source algorithm's return per episode; returns the figures.

  The line is the mean over histories, the band the 10th-90th percentiles;
  with known optima, returns are shown as a fraction of each task's optimum.
  """
  curve = np.asarray(curve_HxE, np.float64)
  ylabel = 'return per episode'
  if optimal_H is not None:
    curve = curve / np.asarray(optimal_H, np.float64)[:, None]
    ylabel = 'fraction of optimal return'
  episodes = np.arange(1, curve.shape[1] + 1)
  mean = np.nanmean(curve, 0)
  low, high = np.nanpercentile(curve, [10, 90], axis=0)
  fig, ax = plt.subplots(figsize=(6, 3.6), dpi=120)
  ax.fill_between(episodes, low, high, alpha=0.25, label='10-90th percentile')
  ax.plot(episodes, mean, lw=2, label='mean over histories')
  if optimal_H is not None:
    ax.axhline(1.0, color='k', ls='--', lw=1, label='optimal')
  ax.set(xlabel='episode of the learning history', ylabel=ylabel, title=title)
  ax.title.set_fontsize(9)
  ax.legend(loc='lower right', fontsize=8)
  ax.grid(alpha=0.3)
  fig.tight_layout()
  fig.savefig(path)
  plt.close(fig)
  last10 = np.nanmean(curve[:, -10:], 1)
  summary = {
    'num_histories': int(curve.shape[0]),
    'num_episodes': int(curve.shape[1]),
    'normalized': optimal_H is not None,
    'mean_first_episode': float(np.nanmean(curve[:, 0])),
    'mean_last_episode': float(np.nanmean(curve[:, -1])),
    'mean_last_10_episodes': float(np.nanmean(last10)),
    'min_last_10_episodes': float(np.nanmin(last10)),
    'mean_per_episode': [float(x) for x in mean],
  }
  if optimal_H is not None:
    summary['fraction_of_histories_reaching_90pct'] = float(
      np.mean(last10 >= 0.9)
    )
  return summary
