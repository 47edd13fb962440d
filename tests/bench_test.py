"""The benchmark command prints rows of the documented contract."""

import json

import pytest

from algdist import bench


def test_a_row_follows_the_contract_and_reports_compile_time_apart(capsys):
  bench.main(['--filter', 'env_steps_per_s/adversarial_bandit'])
  rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
  assert [r['name'] for r in rows] == ['env_steps_per_s/adversarial_bandit']
  row = rows[0]
  assert {'value', 'unit', 'backend', 'devices', 'compile_s'} <= set(row)
  assert row['value'] > 0 and row['unit'] == 'steps/s'
  assert row['compile_s'] >= 0


@pytest.mark.slow  # compiles the 4-layer default model's rollout
def test_eval_row_times_cached_rollouts_after_compiling():
  row = bench.bench_eval_steps(context=8, cached=True, batch=2, num_steps=4)
  assert row['unit'] == 'steps/s' and row['value'] > 0
  assert row['compile_s'] > 0  # compiled before the timed call
  assert (row['batch'], row['steps'], row['context']) == (2, 4, 8)


def test_an_unknown_filter_names_the_benchmarks():
  with pytest.raises(SystemExit, match='env_steps_per_s/dark_room'):
    bench.main(['--filter', 'no_such_benchmark'])
