"""Report: comparing runs (ablations) on one plot."""

import json
import os

import pytest

from algdist import report


def _workdir(tmp_path, name, env, returns):
  directory = tmp_path / name / 'eval'
  directory.mkdir(parents=True)
  entry = {
    'episode_returns': returns,
    'episode_returns_std': [0.0] * len(returns),
    'last_episode_return': returns[-1],
    'num_tasks': 2,
    'num_seeds': 1,
  }
  results = {
    'env': env,
    'optimal_return': {'test': 10.0, 'train': None},
    'methods': {'ad': {'test': entry}},
  }
  (directory / 'results.json').write_text(json.dumps(results))
  return str(tmp_path / name)


def test_compare_runs_puts_one_method_of_each_run_on_one_plot(tmp_path):
  short = _workdir(tmp_path, 'short', 'dark_room', [1.0, 2.0, 3.0])
  long = _workdir(tmp_path, 'long', 'dark_room', [1.0, 5.0, 9.0])
  out = str(tmp_path / 'ablation.png')
  report.main(
    ['--compare', f'{short}:context 20', f'{long}:context 80', '--out', out]
  )
  assert os.path.getsize(out) > 0
  merged = report.compare_runs([short, long], ['z', 'a'], out)
  assert merged['methods']['a']['test']['episode_returns'] == [1.0, 5.0, 9.0]
  summary = report.summary_markdown(merged)
  # Rows in the order given, not sorted by label.
  assert summary.index('| z | test | 3.000 |') < summary.index(
    '| a | test | 9.000 |'
  )


def test_compare_runs_refuses_mismatched_inputs_by_name(tmp_path):
  room = _workdir(tmp_path, 'room', 'dark_room', [1.0])
  bandit = _workdir(tmp_path, 'bandit', 'adversarial_bandit', [0.5])
  out = str(tmp_path / 'x.png')
  with pytest.raises(ValueError, match='adversarial_bandit'):
    report.compare_runs([room, bandit], ['a', 'b'], out)
  with pytest.raises(ValueError, match='no ed results'):
    report.compare_runs([room], ['a'], out, method='ed')
  with pytest.raises(ValueError, match='one each'):
    report.compare_runs([room], ['a', 'b'], out)
  with pytest.raises(FileNotFoundError, match='run the eval stage'):
    report.compare_runs([str(tmp_path / 'none')], ['a'], out)
