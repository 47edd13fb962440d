"""One run as 2 processes x 2 CPU devices (launch/local.sh) equals the same
run as 1 process x 4 devices; each one's checkpoints evaluate in the other
process count."""

import json
import os
import subprocess
import sys

import pytest

_SMOKE = ['-m', 'algdist.main', '--config', 'configs/dark_room.py:smoke']


def _env(devices):
  return dict(
    os.environ,
    XLA_FLAGS=f'--xla_force_host_platform_device_count={devices}',
    JAX_PLATFORMS='cpu',
    TIMEOUT='600',  # launch/local.sh's hard limit
  )


def _two_processes(workdir, *args, logs):
  subprocess.run(
    ['launch/local.sh', '2', '--', sys.executable, *_SMOKE]
    + ['--workdir', str(workdir), *args],
    env={**_env(2), 'LOG_DIR': str(logs)},
    check=True,
    capture_output=True,
    timeout=900,
  )


def _one_process(workdir, *args):
  subprocess.run(
    [sys.executable, *_SMOKE, '--workdir', str(workdir), *args],
    env=_env(4),
    check=True,
    capture_output=True,
    timeout=900,
  )


def _json(path):
  with open(path) as f:
    return json.load(f)


def _rows(workdir, method):
  with open(workdir / 'metrics' / f'train_{method}.jsonl') as f:
    return [json.loads(line) for line in f]


def _curves(workdir):
  results = _json(workdir / 'eval' / 'results.json')
  return {
    (m, s): entry['episode_returns']
    for m, by_split in results['methods'].items()
    for s, entry in by_split.items()
  }


def _assert_close(a, b):
  assert a.keys() == b.keys()
  for key in a:
    assert a[key] == pytest.approx(b[key], abs=1e-5), key


@pytest.mark.slow  # four pipelines as CLI subprocesses
def test_two_processes_equal_one_and_checkpoints_cross_over(tmp_path):
  two, one = tmp_path / 'two', tmp_path / 'one'
  _two_processes(two, logs=tmp_path / 'logs')
  _one_process(one)
  manifests = [_json(w / 'histories' / 'manifest.json') for w in (two, one)]
  assert manifests[0]['shards'] == manifests[1]['shards']  # every checksum
  for method in ('ad', 'ed'):
    rows = [_rows(w, method) for w in (two, one)]
    # Written once (process 0), at the same steps, the same losses up to
    # the order gloo sums in.
    assert [r['step'] for r in rows[0]] == [r['step'] for r in rows[1]]
    for a, b in zip(*rows, strict=True):
      assert a['loss'] == pytest.approx(b['loss'], abs=1e-5)
  _assert_close(_curves(two), _curves(one))
  reference = _curves(one)
  # Each run's checkpoints, evaluated in the other process count.
  _one_process(two, '--mode', 'eval')
  _assert_close(_curves(two), reference)
  _two_processes(one, '--mode', 'eval', logs=tmp_path / 'logs_eval')
  _assert_close(_curves(one), reference)
