"""One run as 2 processes x 2 CPU devices (launch/local.sh) equals the same
run as 1 process x 4 devices; each one's checkpoints evaluate in the other
process count; a preemption notice stops every process at one update."""

import json
import os
import signal
import subprocess
import sys
import time

import chex
import pytest

from algdist import checkpoints
from configs import dark_room

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


# Streamed batches, and a training run long enough to be stopped midway.
_STREAM = [
  '--config.data.placement=stream',
  '--config.train.num_steps=100',
  '--config.train.checkpoint_every=20',
  '--config.train.log_every=10',
  '--config.train.methods=("ad",)',
  '--config.evaluation.methods=("ad","random")',
]
# The README's hybrid mesh, a granule per process: the batch split over
# both axes (each process reads the half its devices hold), the
# feed-forward weights only within a process.
_HYBRID = [
  '--config.sharding.mesh_axes=("replica","data")',
  '--config.sharding.mesh_shape=(1,-1)',
  '--config.sharding.dcn_mesh_shape=(2,1)',
  '--config.sharding.rules=(("batch",("replica","data")),("mlp","data"))',
]


@pytest.mark.slow  # three pipelines as CLI subprocesses
def test_a_preempted_two_process_run_resumes_to_the_one_process_result(
  tmp_path,
):
  one, two = tmp_path / 'one', tmp_path / 'two'
  _one_process(one, *_STREAM)
  command = ['launch/local.sh', '2', '--', sys.executable, *_SMOKE]
  command += ['--workdir', str(two), *_STREAM, *_HYBRID]
  logs = tmp_path / 'logs'
  proc = subprocess.Popen(
    command,
    env={**_env(2), 'LOG_DIR': str(logs)},
    stdout=subprocess.DEVNULL,
    stderr=subprocess.DEVNULL,
  )
  first = two / 'checkpoints' / 'ad' / '20' / 'commit_success.txt'
  deadline = time.monotonic() + 600
  while not first.exists() and proc.poll() is None:
    assert time.monotonic() < deadline
    time.sleep(0.05)
  proc.send_signal(signal.SIGTERM)  # local.sh hands it to every process
  assert proc.wait(timeout=300) == 143
  said = [
    [x for x in (logs / f'process_{i}.log').read_text().splitlines()]
    for i in (0, 1)
  ]
  said = [[x for x in lines if x.startswith('PREEMPTED')] for lines in said]
  # Both processes stopped, at the same update.
  assert said[0] == said[1] and len(said[0]) == 1, said
  (line,) = said[0]
  step = int(line.split('update ')[1].split()[0])
  assert 20 < step < 100
  assert checkpoints.provenance(str(two), 'ad').step == step
  _two_processes(two, *_STREAM, *_HYBRID, logs=tmp_path / 'logs_resumed')
  config = dark_room.get_config('smoke')
  config.train.update(num_steps=100, checkpoint_every=20, methods=('ad',))
  _, a = checkpoints.restore_params(config, str(one))
  _, b = checkpoints.restore_params(config, str(two))
  chex.assert_trees_all_close(a, b, atol=1e-5)
  _assert_close(_curves(two), _curves(one))
