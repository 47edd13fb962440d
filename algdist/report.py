"""Plots and summaries people read: learning curves, results, videos."""

from __future__ import annotations

import json
import os

import matplotlib

matplotlib.use('Agg')  # files only; no display needed

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def source_learning_curve(curve_HxE, optimal_H, title: str, path: str) -> dict:
  """Plots the source algorithm's return per episode; returns the figures.

  `curve_HxE` is NaN past a history's last complete episode: where episodes
  end early (at a door, at a goal) histories of equal steps hold different
  numbers of episodes. The plot shows the episodes every history has, so
  each point averages over all of them; the line is the mean, the band the
  10th-90th percentiles of 5-episode means. The summary's "last 10
  episodes" are each history's own last ten. With known optima, returns are
  shown as a fraction of each task's optimum.
  """
  curve = np.asarray(curve_HxE, np.float64)
  ylabel = 'return per episode'
  if optimal_H is not None:
    curve = curve / np.asarray(optimal_H, np.float64)[:, None]
    ylabel = 'fraction of optimal return'
  # Complete episodes come first in each row, NaNs after them.
  count_H = np.sum(~np.isnan(curve), 1)
  shown = max(int(count_H.min()), 1)
  episodes = np.arange(1, shown + 1)
  mean = np.nanmean(curve[:, :shown], 0)
  # The band spreads each history's mean over 5 episodes centred on each
  # one: single returns take few values on sparse tasks (0, 1/2 or 1 of
  # optimal on Key-to-Door), and their percentiles would jump between them.
  window = 5
  sums = np.concatenate(
    [np.zeros((len(curve), 1)), np.cumsum(curve[:, :shown], 1)], 1
  )
  start = np.maximum(np.arange(shown) - window // 2, 0)
  stop = np.minimum(np.arange(shown) + window // 2 + 1, shown)
  smooth = (sums[:, stop] - sums[:, start]) / (stop - start)
  low, high = np.nanpercentile(smooth, [10, 90], axis=0)
  fig, ax = plt.subplots(figsize=(6, 3.6), dpi=120)
  ax.fill_between(
    episodes,
    low,
    high,
    alpha=0.25,
    label=f'10-90th percentile ({window}-episode means)',
  )
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
  # Each history's own last ten complete episodes.
  offsets = np.arange(-10, 0)
  index_Hx10 = count_H[:, None] + offsets
  last_Hx10 = np.take_along_axis(curve, np.maximum(index_Hx10, 0), 1)
  last_Hx10 = np.where(index_Hx10 >= 0, last_Hx10, np.nan)
  last10 = np.nanmean(last_Hx10, 1)
  summary = {
    'num_histories': int(curve.shape[0]),
    'num_episodes': int(curve.shape[1]),
    'min_episodes': int(count_H.min()),
    'normalized': optimal_H is not None,
    'mean_first_episode': float(np.nanmean(curve[:, 0])),
    'mean_last_episode': float(np.nanmean(last_Hx10[:, -1])),
    'mean_last_10_episodes': float(np.nanmean(last10)),
    'min_last_10_episodes': float(np.nanmin(last10)),
    'mean_per_episode': [float(x) for x in mean],
  }
  if optimal_H is not None:
    summary['fraction_of_histories_reaching_90pct'] = float(
      np.mean(last10 >= 0.9)
    )
  return summary


# In-context evaluation (algdist/evaluate.py writes results.json).

# Plot order and colours of the methods results.json may hold.
_METHOD_STYLE = {
  'ad': ('AD', 'tab:blue'),
  'ed': ('ED', 'tab:orange'),
  'source': ('source', 'tab:green'),
  'rl_baseline': ('RL from scratch', 'tab:red'),
  'random': ('random', 'tab:gray'),
}


def _method_label(name: str, entry: dict) -> str:
  label = _METHOD_STYLE.get(name, (name, None))[0]
  if entry.get('partial'):  # evaluated before its training finished
    label += f' (partial: update {entry["checkpoint_step"]})'
  if name in ('source', 'rl_baseline'):
    label += f' ({entry.get("algorithm", "?")})'
    actors = entry.get('episodes_of_experience_per_episode', 1)
    label += f', {actors} actors' if actors > 1 else ''  # pooled experience
  return label


def _ordered_methods(results: dict) -> list[str]:
  methods = list(results['methods'])
  known = [m for m in _METHOD_STYLE if m in methods]
  # Others (compare_runs' labels) in the order given.
  return known + [m for m in methods if m not in _METHOD_STYLE]


def in_context_curves(results: dict, path: str) -> None:
  """Return per episode against episodes of environment experience (a
  learner pooling k actors spends k per point of its curve, AD and ED one),
  test and train panels, as a PNG. Lines are means over tasks x seeds,
  bands their standard error (older results: one standard deviation), the
  dashed line the mean optimal return; a log axis when a learner's curve
  runs far past the models'; the legend below the panels, off the curves.
  """
  splits = [
    s
    for s in ('test', 'train')
    if any(s in r for r in results['methods'].values())
  ] or ['test']
  fig, axes = plt.subplots(
    1, len(splits), figsize=(5.2 * len(splits), 4.2), dpi=120, squeeze=False
  )
  handles = {}
  for ax, split in zip(axes[0], splits, strict=True):
    spans = []  # episodes of experience each curve covers
    for name in _ordered_methods(results):
      entry = results['methods'][name].get(split)
      if entry is None or not entry['episode_returns']:
        continue
      mean = np.asarray(entry['episode_returns'])
      band = np.asarray(
        entry.get('episode_returns_sem', entry['episode_returns_std'])
      )
      per = entry.get('episodes_of_experience_per_episode', 1)
      experience = per * np.arange(1, len(mean) + 1)
      spans.append(experience[-1])
      colour = _METHOD_STYLE.get(name, (name, None))[1]
      line = ax.plot(experience, mean, lw=2, color=colour)[0]
      ax.fill_between(
        experience, mean - band, mean + band, alpha=0.25, color=line.get_color()
      )
      handles.setdefault(_method_label(name, entry), line)
    optimal = results.get('optimal_return', {}).get(split)
    if optimal is not None:
      handles['optimal'] = ax.axhline(optimal, color='k', ls='--', lw=1)
    if spans and max(spans) > 4 * min(spans):
      ax.set_xscale('log')
    some = next(iter(results['methods'].values()), {}).get(split, {})
    ax.set(
      xlabel='episodes of environment experience',
      ylabel='return per episode',
      title=f'{results["env"]}, {split} tasks '
      f'({some.get("num_tasks", "?")} tasks x {some.get("num_seeds", "?")} '
      'seeds)',
    )
    ax.title.set_fontsize(9)
    ax.grid(alpha=0.3)
  fig.legend(
    list(handles.values()),
    list(handles),
    loc='lower center',
    ncol=min(3, len(handles)),
    fontsize=7,
    frameon=False,
  )
  rows = -(-len(handles) // 3)  # legend rows, three entries each
  fig.tight_layout(rect=(0, 0.05 * rows + 0.02, 1, 1))
  fig.savefig(path)
  plt.close(fig)


def summary_markdown(results: dict) -> str:
  """A Markdown table: method x split, last-episode return and its fraction
  of the optimal return."""
  optimal = results.get('optimal_return', {})
  lines = [
    f'# In-context evaluation: {results["env"]}',
    '',
    'Return of the *last* in-context episode, mean over tasks x seeds (not '
    'the best episode); fraction of optimal = that mean / the mean optimal '
    'return of the same tasks.',
    '',
    'First to 80%: the first episode whose mean return reaches 80% of '
    'optimal, counted in episodes of experience (a source whose learner '
    'pools several actors used that many episodes per point); regret: '
    'optimal minus mean return, summed over episodes.',
    '',
    '| method | split | last-episode return | std | fraction of optimal '
    '| first to 80% | regret | episodes | tasks x seeds |',
    '|---|---|---|---|---|---|---|---|---|',
  ]
  for name in _ordered_methods(results):
    for split in ('test', 'train'):
      entry = results['methods'][name].get(split)
      if entry is None:
        continue
      std = entry['episode_returns_std']
      best = optimal.get(split)
      last = entry['last_episode_return']
      if last is None:  # no episode finished in every rollout
        continue
      fraction = f'{last / best:.3f}' if best else 'n/a'  # n/a: no optimum
      first = entry.get('first_episode_reaching_80pct')
      per = entry.get('episodes_of_experience_per_episode', 1)
      first = 'n/a' if best is None else '-' if first is None else first * per
      regret = entry.get('cumulative_regret')
      regret = 'n/a' if regret is None else f'{regret:.1f}'
      lines.append(
        f'| {_method_label(name, entry)} | {split} | {last:.3f} | '
        f'{std[-1] if std else float("nan"):.3f} | {fraction} | {first} | '
        f'{regret} | {len(entry["episode_returns"])} | '
        f'{entry["num_tasks"]} x {entry["num_seeds"]} |'
      )
  lines += _versus_markdown(results.get('ad_versus', {}))
  lines += _improvement_markdown(results)
  for split in [s for s in ('test', 'train') if optimal.get(s) is not None]:
    lines += ['', f'Optimal return per episode ({split}): {optimal[split]:.3f}']
  if 'eval' in results.get('seconds', {}):
    lines += ['', f'Evaluation took {results["seconds"]["eval"]:.1f} s.']
  return '\n'.join(lines) + '\n'


def _versus_markdown(versus: dict) -> list[str]:
  """Lines of the AD-against-its-RL-learners table (empty without one)."""
  show = lambda x, fmt='{}': '-' if x is None else fmt.format(x)
  rows = [
    f'| {_METHOD_STYLE[name][0]} ({v["algorithm"]}) | {split} | '
    f'{show(v["ad_experience_to_80pct"])} | '
    f'{show(v["learner_experience_to_80pct"])} | '
    f'{show(v["experience_ratio"], "{:.2f}x")} | {v["experience_episodes"]} '
    f'| {show(v["ad_regret"], "{:.1f}")} | '
    f'{show(v["learner_regret"], "{:.1f}")} | '
    f'{show(v["regret_ratio"], "{:.2f}")} |'
    for name, by_split in versus.items()
    for split, v in by_split.items()
  ]
  return rows and [
    '',
    '## AD against RL learners from scratch, in episodes of experience',
    '',
    'To 80%: episodes of environment experience until the mean return first '
    'reaches 80% of optimal (ratio: learner / AD, how many times less AD '
    "needs; -: never reached). Regret over the same experience, AD's "
    'horizon (ratio AD / learner: below 1, AD gave up less).',
    '',
    '| learner | split | AD to 80% | learner to 80% | ratio | experience '
    '| AD regret | learner regret | ratio |',
    '|---|---|---|---|---|---|---|---|---|',
    *rows,
  ]


def _improvement_markdown(results: dict) -> list[str]:
  """Lines of the first-k against last-k table, and AD's last k against
  each other method's, with 95% intervals (empty for short curves)."""
  ci = lambda c: f'[{c[0]:+.3f}, {c[1]:+.3f}]'
  times = lambda r: '-' if r is None else f'{r:.2f}x'
  rows, k = [], None
  for name in _ordered_methods(results):
    for split in ('test', 'train'):
      e = results['methods'][name].get(split)
      if e is None or 'late_mean' not in e:
        continue
      k = e['early_late_episodes']
      ratio = e['late_mean'] / e['early_mean'] if e['early_mean'] else None
      rows.append(
        f'| {_method_label(name, e)} | {split} | {e["early_mean"]:.3f} | '
        f'{e["late_mean"]:.3f} | {e["late_minus_early"]:+.3f} '
        f'{ci(e["late_minus_early_ci95"])} | {times(ratio)} |'
      )
  versus = [
    f'| {_METHOD_STYLE.get(name, (name,))[0]} | {split} | '
    f'{v["difference"]:+.3f} {ci(v["difference_ci95"])} | {times(v["ratio"])} |'
    for split, by_name in results.get('ad_late_versus', {}).items()
    for name, v in by_name.items()
  ]
  if not rows:
    return []
  lines = [
    '',
    f'## In-context improvement: the last {k} episodes against the first {k}',
    '',
    'Mean return per episode over each end of the curve; the difference is '
    "each rollout's own (paired), with its 95% interval.",
    '',
    f'| method | split | first {k} | last {k} | last - first [95% CI] '
    '| ratio |',
    '|---|---|---|---|---|---|',
    *rows,
  ]
  return lines + (
    versus
    and [
      '',
      f"AD's last {k} episodes against each method's (95% interval, "
      'independent rollouts):',
      '',
      '| against | split | AD - method [95% CI] | AD / method |',
      '|---|---|---|---|',
      *versus,
    ]
  )


def write_report(workdir: str) -> dict:
  """Reads WORKDIR/eval/results.json; writes learning_curves.png and
  summary.md beside it; returns their paths."""
  directory = os.path.join(workdir, 'eval')
  with open(os.path.join(directory, 'results.json')) as f:
    results = json.load(f)
  paths = {
    'curves': os.path.join(directory, 'learning_curves.png'),
    'summary': os.path.join(directory, 'summary.md'),
  }
  in_context_curves(results, paths['curves'])
  with open(paths['summary'], 'w') as f:
    f.write(summary_markdown(results))
  return paths


def training_curves(workdir: str, methods=('ad', 'ed')) -> str | None:
  """Plots loss and action accuracy, train and held-out, per method.

  Reads WORKDIR/metrics/train_<method>.jsonl; writes
  WORKDIR/metrics/training_curves.png and returns its path (None when no
  method has metrics yet).
  """
  rows = {}
  for method in methods:
    path = os.path.join(workdir, 'metrics', f'train_{method}.jsonl')
    if os.path.exists(path):
      with open(path) as f:
        rows[method] = [json.loads(line) for line in f]
  if not rows:
    return None
  fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 3.6), dpi=120)
  panels = ((ax_loss, 'loss'), (ax_acc, 'accuracy'))
  for i, (method, table) in enumerate(rows.items()):
    color, name = f'C{i}', method.upper()
    val = [r for r in table if 'val_loss' in r]
    for ax, key in panels:
      ax.plot(
        [r['step'] for r in table],
        [r[key] for r in table],
        color=color,
        alpha=0.5,
        label=f'{name} train',
      )
      if val:
        ax.plot(
          [r['step'] for r in val],
          [r[f'val_{key}'] for r in val],
          color=color,
          marker='o',
          ms=3,
          label=f'{name} held-out',
        )
    if val:
      ax_acc.axhline(
        val[-1]['val_constant_action_accuracy'],
        color=color,
        ls=':',
        lw=1,
        label=f'{name} best constant action',
      )
  ax_loss.set(
    xlabel='update', ylabel='cross-entropy (nats)', title='next-action loss'
  )
  ax_acc.set(
    xlabel='update',
    ylabel='accuracy',
    title='next-action accuracy',
    ylim=(0, 1),
  )
  for ax in (ax_loss, ax_acc):
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
  fig.tight_layout()
  path = os.path.join(workdir, 'metrics', 'training_curves.png')
  fig.savefig(path)
  plt.close(fig)
  return path


def compare_runs(
  workdirs: list[str], labels: list[str], path: str, method: str = 'ad'
) -> dict:
  """One method's in-context curves from several workdirs on one plot (an
  ablation: the same experiment with one field changed); returns the merged
  results, whose 'methods' are the labels.

  Every workdir must hold eval/results.json of the same env and `method`.
  """
  if len(workdirs) != len(labels):
    raise ValueError(
      f'{len(workdirs)} workdirs but {len(labels)} labels: give one each.'
    )
  merged = {'methods': {}}
  for workdir, label in zip(workdirs, labels, strict=True):
    file = os.path.join(workdir, 'eval', 'results.json')
    if not os.path.exists(file):
      raise FileNotFoundError(f'{file}: run the eval stage there first.')
    with open(file) as f:
      results = json.load(f)
    if merged.setdefault('env', results['env']) != results['env']:
      raise ValueError(
        f'{workdir} evaluated {results["env"]}, the others {merged["env"]}.'
      )
    if method not in results['methods']:
      raise ValueError(
        f'{workdir} has no {method} results (it has '
        f'{sorted(results["methods"])}).'
      )
    merged['methods'][label] = results['methods'][method]
    merged.setdefault('optimal_return', results['optimal_return'])
  in_context_curves(merged, path)
  return merged


def main(argv: list[str] | None = None) -> None:
  """`python -m algdist.report --compare DIR:LABEL ... --out FILE.png
  [--method ad]`: an ablation's curves on one plot, and its summary table
  printed."""
  import argparse

  parser = argparse.ArgumentParser(prog='python -m algdist.report')
  parser.add_argument(
    '--compare', nargs='+', required=True, metavar='WORKDIR:LABEL'
  )
  parser.add_argument('--out', required=True, help='the PNG to write')
  parser.add_argument('--method', default='ad', help='ad, ed, source, ...')
  args = parser.parse_args(argv)
  pairs = [
    item.rsplit(':', 1) if ':' in item else (item, item)
    for item in args.compare
  ]
  merged = compare_runs(
    [p[0] for p in pairs], [p[1] for p in pairs], args.out, args.method
  )
  print(summary_markdown(merged))


if __name__ == '__main__':
  main()
