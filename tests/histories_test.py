"""Learning-history datasets: determinism, resume after a kill, corruption."""

import json
import os
import signal
import subprocess
import sys
import time

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from algdist import histories
from algdist.agents import base

SPEC = histories.Spec(
  env='dark_room',
  env_overrides={},
  split='train',
  algorithm='ppo',
  algorithm_config={'num_actors': 2, 'num_updates': 3},
  num_tasks=3,
  learners_per_task=1,
  learners_per_shard=2,
  subsample_every=1,
  seed=0,
)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _checksums(directory):
  with open(os.path.join(directory, 'manifest.json')) as f:
    manifest = json.load(f)
  return {s['name']: s['files'] for s in manifest['shards']}


@pytest.fixture(scope='module')
def dataset(tmp_path_factory):
  directory = str(tmp_path_factory.mktemp('histories'))
  manifest = histories.generate(SPEC, directory, progress=False)
  return directory, manifest


def test_manifest_and_arrays_follow_the_contract(dataset):
  directory, manifest = dataset
  assert manifest['complete'] is True
  # 3 tasks x 1 learner x 2 actors, the padded last shard trimmed.
  assert manifest['num_histories'] == 6
  assert manifest['steps_per_history'] == 60
  assert manifest['num_shards'] == 2
  assert manifest['schema_version'] == histories.SCHEMA_VERSION
  assert len(manifest['tasks']['goal']) == 3
  dataset = histories.load(directory)
  history, length = dataset.history, dataset.length
  chex.assert_shape(history.obs, (6, 60, 2))
  assert history.obs.dtype == np.int32 and history.action.dtype == np.int32
  assert history.episode_start.dtype == bool
  np.testing.assert_array_equal(length, 60)
  np.testing.assert_array_equal(dataset.task_index, [0, 0, 1, 1, 2, 2])
  # Episodes of 20 steps: starts at 0, 20, 40.
  np.testing.assert_array_equal(
    np.flatnonzero(history.episode_start[0]), [0, 20, 40]
  )


def test_same_seed_same_dataset_and_other_seed_differs(dataset, tmp_path):
  directory, _ = dataset
  again = str(tmp_path / 'again')
  histories.generate(SPEC, again, progress=False)
  assert _checksums(again) == _checksums(directory)
  other = str(tmp_path / 'other')
  histories.generate(
    SPEC.__class__(**{**SPEC.__dict__, 'seed': 1}), other, progress=False
  )
  assert _checksums(other) != _checksums(directory)


def test_shards_equal_learners_run_one_by_one(dataset):
  directory, manifest = dataset
  from algdist import agents, envs  # noqa: PLC0415

  env, params = envs.make('dark_room')
  config, make_train = agents.get('ppo', **SPEC.algorithm_config)
  train = jax.jit(make_train(config, env))
  history = histories.load(directory).history
  tasks = envs.base.batch_replace(params, **manifest['tasks'])
  # Learner 2 is the first of shard 1: key fold_in(seed, 1), split, index 0.
  key = jax.random.split(jax.random.fold_in(jax.random.key(0), 1), 2)[0]
  _, single = train(key, jax.tree.map(lambda x: x[2], tasks))
  chex.assert_trees_all_equal(
    jax.tree.map(np.asarray, single),
    jax.tree.map(lambda x: np.asarray(x[4:6]), history),
  )


def test_a_recorded_target_round_trips_to_the_training_labels(
  dataset, tmp_path
):
  from algdist import input_pipeline, sequence  # noqa: PLC0415

  spec = histories.Spec(
    **{
      **SPEC.__dict__,
      'algorithm': 'coverage',
      'algorithm_config': {
        'num_steps': 80,
        'epsilon': 0.3,
        'imitate': 'planned',
      },
      'num_tasks': 2,
      'learners_per_shard': 1,
    }
  )
  directory = str(tmp_path / 'planned')
  manifest = histories.generate(spec, directory, progress=False)
  assert 'target.npy' in manifest['shards'][0]['files']
  loaded = histories.load(directory)
  history = loaded.history
  chex.assert_shape(history.target, (2, 80))
  assert (history.target != history.action).any()
  selection = input_pipeline.select_histories(
    loaded,
    window_steps=20,
    validation_tasks=0.0,
    expert_episodes=0,
    seed=0,
  )
  # Both loaders label steps with the recorded targets and feed the
  # actions taken as the previous actions.
  data = input_pipeline.device_data(history, selection.train, selection, 5, 20)
  np.testing.assert_array_equal(data.target, history.target)
  steps_HxT, _ = sequence.model_inputs(history, 5)
  np.testing.assert_array_equal(data.steps.prev_action, steps_HxT.prev_action)
  source = input_pipeline.WindowSource(
    history, selection.train, selection, 5, 20, seed=0
  )
  steps, target = source[3]
  where = [
    (h, s)
    for h in range(2)
    for s in range(61)
    if (steps_HxT.prev_action[h, s : s + 20] == steps.prev_action).all()
    and (steps_HxT.obs[h, s : s + 20] == steps.obs).all()
  ]
  h, s = where[0]
  np.testing.assert_array_equal(target, history.target[h, s : s + 20])
  # Histories of other learners record no target and load without one.
  plain = histories.load(dataset[0]).history
  assert plain.target is None


def test_truncated_or_corrupted_shard_is_named(dataset, tmp_path):
  directory, _ = dataset
  copy = str(tmp_path / 'copy')
  subprocess.run(['cp', '-r', directory, copy], check=True)
  reward = os.path.join(copy, 'shard_00001', 'reward.npy')
  with open(reward, 'r+b') as f:
    f.truncate(os.path.getsize(reward) - 7)
  with pytest.raises(histories.DatasetError, match='shard_00001.*truncated'):
    histories.load(copy)
  obs = os.path.join(copy, 'shard_00000', 'obs.npy')
  data = bytearray(open(obs, 'rb').read())
  data[-1] ^= 0xFF
  open(obs, 'wb').write(bytes(data))
  with pytest.raises(histories.DatasetError, match='shard_00000.*checksum'):
    histories.load(copy)


def test_another_config_in_the_same_directory_is_refused(dataset):
  directory, _ = dataset
  other = SPEC.__class__(**{**SPEC.__dict__, 'num_tasks': 4})
  with pytest.raises(histories.DatasetError, match='another configuration'):
    histories.generate(other, directory, progress=False)


def test_incomplete_dataset_is_refused_on_load(tmp_path):
  os.makedirs(tmp_path / 'h')
  with open(tmp_path / 'h' / 'manifest.json', 'w') as f:
    json.dump({'complete': False, 'shards': [], 'num_shards': 2}, f)
  with pytest.raises(histories.DatasetError, match='incomplete'):
    histories.load(str(tmp_path / 'h'))


def test_subsampling_keeps_every_kth_episode():
  starts = jnp.zeros(12, bool).at[jnp.array([0, 3, 5, 9])].set(True)
  h = base.History(
    obs=jnp.arange(12)[:, None],
    action=jnp.arange(12),
    reward=jnp.ones(12),
    episode_start=starts,
  )
  packed, length = histories.subsample_episodes(h, 2)
  # Episodes 0 (steps 0-2) and 2 (steps 5-8) are kept.
  assert int(length) == 7
  np.testing.assert_array_equal(
    packed.action, [0, 1, 2, 5, 6, 7, 8, 0, 0, 0, 0, 0]
  )
  np.testing.assert_array_equal(packed.reward[7:], 0.0)
  np.testing.assert_array_equal(np.flatnonzero(packed.episode_start), [0, 3])


@pytest.mark.slow  # a CLI subprocess, killed
def test_killed_generation_resumes_to_the_identical_dataset(tmp_path):
  """A subprocess killed after its first shard, rerun, equals a clean run."""
  overrides = [
    '--config.source.config.num_actors=8',
    '--config.source.config.num_updates=40',
    '--config.histories.num_tasks=4',
    '--config.histories.learners_per_shard=1',
  ]
  cmd = [
    sys.executable,
    '-m',
    'algdist.main',
    '--config',
    # PPO learners: slow enough per shard for the kill to land mid-run.
    'configs/dark_room.py:ppo',
    '--mode',
    'generate',
  ]
  killed = str(tmp_path / 'killed')
  env = {**os.environ, 'XLA_FLAGS': '', 'JAX_PLATFORMS': 'cpu'}
  proc = subprocess.Popen(
    cmd + ['--workdir', killed] + overrides,
    cwd=ROOT,
    env=env,
    stdout=subprocess.DEVNULL,
    stderr=subprocess.DEVNULL,
  )
  manifest = os.path.join(killed, 'histories', 'manifest.json')
  deadline = time.time() + 240
  while time.time() < deadline and proc.poll() is None:
    if os.path.exists(manifest) and _checksums(os.path.dirname(manifest)):
      break
    time.sleep(0.02)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  partial = _checksums(os.path.dirname(manifest))
  assert 1 <= len(partial) < 4, f'kill came too late: {sorted(partial)}'
  kept = os.path.join(killed, 'histories', sorted(partial)[0], 'obs.npy')
  kept_mtime = os.stat(kept).st_mtime_ns
  subprocess.run(
    cmd + ['--workdir', killed] + overrides,
    cwd=ROOT,
    env=env,
    check=True,
    capture_output=True,
  )
  clean = str(tmp_path / 'clean')
  subprocess.run(
    cmd + ['--workdir', clean] + overrides,
    cwd=ROOT,
    env=env,
    check=True,
    capture_output=True,
  )
  resumed = _checksums(os.path.join(killed, 'histories'))
  assert resumed == _checksums(os.path.join(clean, 'histories'))
  # The shards finished before the kill were kept, not redone.
  assert os.stat(kept).st_mtime_ns == kept_mtime


def test_return_curve_drops_a_last_episode_cut_off_by_the_history_end():
  # Episodes of at most 4 steps: [0-3] full, [4-5] ended early (a door),
  # [6-7] cut off by the end of the history.
  starts = jnp.zeros(8, bool).at[jnp.array([0, 4, 6])].set(True)
  h = base.History(
    obs=jnp.zeros((1, 8, 2), jnp.int32),
    action=jnp.zeros((1, 8), jnp.int32),
    reward=jnp.arange(8, dtype=jnp.float32)[None],
    episode_start=starts[None],
  )
  length = jnp.array([8])
  curve = histories.episode_return_curve(h, length, 4, max_episode_steps=4)
  np.testing.assert_array_equal(curve, [[6.0, 9.0, np.nan, np.nan]])
  # A last episode of the full length is complete; without a maximum it
  # always counts.
  full = histories.episode_return_curve(h, jnp.array([6]), 4, 2)
  np.testing.assert_array_equal(full, [[6.0, 9.0, np.nan, np.nan]])
  np.testing.assert_array_equal(
    histories.episode_return_curve(h, length, 3), [[6.0, 9.0, 13.0]]
  )
