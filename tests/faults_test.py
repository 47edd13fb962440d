"""Faults and bad input: never a wrong result, nothing lost, one clear line.

Each scenario is a case of a table where it can be: the fault, then what
must happen (a named error, the workdir untouched, a safe fallback, a
rerun of what went stale). The Dark Room smoke preset keeps each run to
seconds.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import chex
import jax
import jax.numpy as jnp
import pytest

from algdist import (
  checkpoints,
  config_lib,
  evaluate,
  files,
  histories,
  main,
  metrics,
  train,
)
from configs import dark_room


def _smoke():
  config = dark_room.get_config('smoke')
  config.evaluation.methods = ('ad', 'random')
  config.train.methods = ('ad',)
  return config


def _set(config, field, value):
  *sections, name = field.split('.')
  node = config
  for section in sections:
    node = node[section]
  node[name] = value


@pytest.mark.parametrize(
  'field, value, says',
  [
    ('histories.learners_per_shard', -1, 'must be >= 1'),
    ('train.batch_size', 0, 'must be >= 1'),
    ('evaluation.num_episodes', 0, 'must be >= 1'),
    ('evaluation.temperature', -1.0, 'must be >= 0'),
    ('data.window_steps', 5, 'must be >= model.context_steps=20'),
    ('data.validation_tasks', 1.0, r'must be in \[0, 1\)'),
    ('train.warmup_steps', 10**6, 'must be in'),
    ('model.num_heads', 3, 'num_heads'),
    ('train.methods', ('ad', 'ed'), None),  # valid: ED with 2 episodes
  ],
)
def test_a_bad_value_is_one_error_before_anything_is_written(
  tmp_path, field, value, says
):
  config = _smoke()
  _set(config, field, value)
  if says is None:
    main.validate_config(config)
    return
  workdir = tmp_path / 'run'
  with pytest.raises(ValueError, match=says):
    main.run(config, str(workdir))
  assert not workdir.exists()


def test_a_gymnax_env_without_tasks_is_one_line_before_anything_is_written(
  tmp_path,
):
  config = _smoke()
  config.env.name = 'gymnax:MetaMaze-misc'
  with pytest.raises(ValueError, match='has no task distribution'):
    main.run(config, str(tmp_path / 'run'))
  assert not (tmp_path / 'run').exists()


def test_ed_without_expert_episodes_is_refused_up_front(tmp_path):
  config = _smoke()
  config.train.methods = ('ad', 'ed')
  config.ed.expert_episodes = 0
  with pytest.raises(ValueError, match=r'ed.expert_episodes=0'):
    main.run(config, str(tmp_path / 'run'))
  assert not (tmp_path / 'run').exists()


@pytest.mark.parametrize(
  'name, text, error, says',
  [
    ('config.json', '{"train": ', files.FileError, 'config.json is not valid'),
    ('config.json', '[1, 2]', files.FileError, 'holds a JSON list'),
    (
      'histories/manifest.json',
      'garbage',
      files.FileError,
      'manifest.json is not valid JSON.*Delete',
    ),
    (
      'histories/manifest.json',
      json.dumps({'shards': [{'name': '../../outside/shard_00000'}]}),
      histories.DatasetError,
      "lists a shard '../../outside/shard_00000'",
    ),
    (
      'histories/manifest.json',
      json.dumps({'shards': [{'name': 'shard_00000', 'files': {'../x': {}}}]}),
      histories.DatasetError,
      r"with files \{'../x'",
    ),
    (
      'eval/results.json',
      '{"methods": ',
      files.FileError,
      'results.json is not valid JSON.*run --mode eval',
    ),
  ],
)
def test_a_garbled_file_is_named_with_its_remedy(
  tmp_path, name, text, error, says
):
  workdir = tmp_path / 'run'
  (workdir / os.path.dirname(name)).mkdir(parents=True, exist_ok=True)
  (workdir / name).write_text(text)
  mode = 'report' if name.startswith('eval') else 'generate'
  with pytest.raises(error, match=says):
    main.run(_smoke(), str(workdir), mode)
  assert (workdir / name).read_text() == text  # nothing overwritten


def test_a_workdir_that_is_a_file_or_held_by_another_run_is_refused(
  tmp_path,
):
  path = tmp_path / 'file'
  path.write_text('x')
  with pytest.raises(files.FileError, match='is a file'):
    main.run(_smoke(), str(path), 'generate')
  workdir = str(tmp_path / 'run')
  with files.workdir_lock(workdir):
    with pytest.raises(files.FileError, match=r'in use by another run \(pid'):
      main.run(_smoke(), workdir, 'generate')
  assert not os.path.exists(os.path.join(workdir, 'histories'))


def test_a_workdir_that_cannot_be_written_is_one_line(tmp_path):
  (tmp_path / 'file').write_text('x')
  with pytest.raises(files.FileError, match='cannot be written'):
    main.run(_smoke(), str(tmp_path / 'file' / 'run'), 'generate')


def test_a_value_found_bad_after_ad_trained_is_corrected_in_place(tmp_path):
  """ED's windows outgrow one expert episode: found when ED's turn comes,
  after AD trained. The corrected rerun is accepted and AD is kept."""
  config = _smoke()
  config.train.methods = config.evaluation.methods = ('ad', 'ed')
  config.ed.expert_episodes = 1  # one 20-step episode, 30-step windows
  workdir = str(tmp_path / 'run')
  with pytest.raises(ValueError, match='offers 20 steps to window'):
    main.run(config, workdir)
  ad = checkpoints.provenance(workdir, 'ad')
  assert ad.finished
  config.ed.expert_episodes = 2
  main.run(config, workdir)
  assert checkpoints.provenance(workdir, 'ad') == ad  # not trained again
  assert checkpoints.provenance(workdir, 'ed').finished
  assert set(_results(workdir)['methods']) == {'ad', 'ed'}


def test_after_a_divergence_before_any_checkpoint_the_advice_works(tmp_path):
  config = _smoke()
  config.train.update(
    learning_rate=1e12, init_learning_rate=1e12, grad_clip=1e30
  )
  workdir = str(tmp_path / 'run')
  with pytest.raises(FloatingPointError, match='Lower train.learning_rate'):
    main.run(config, workdir)
  assert checkpoints.provenance(workdir, 'ad') is None
  main.run(_smoke(), workdir)  # the advice: a lower rate, same workdir
  assert checkpoints.provenance(workdir, 'ad').finished


def test_non_finite_parameters_are_never_checkpointed(tmp_path):
  state = train.TrainState(
    step=jnp.int32(3),
    params={'w': jnp.array([1.0, jnp.nan])},
    opt_state=(),
    key=jax.random.key_data(jax.random.key(0)),
  )
  directory = str(tmp_path / 'ckpt')
  manager = checkpoints.make_manager(directory, keep=2)
  with pytest.raises(FloatingPointError, match='update 3 are not finite'):
    checkpoints.save(manager, 3, state, 'ad', {}, 10)
  manager.close()
  assert not [d for d in os.listdir(directory) if d.isdigit()]


def test_resumed_metrics_drop_later_rows_and_a_cut_line(tmp_path, caplog):
  directory = tmp_path / 'metrics'
  directory.mkdir()
  rows = [json.dumps({'step': s, 'loss': 1.0}) for s in (10, 20, 30)]
  (directory / 'train_ad.jsonl').write_text('\n'.join(rows) + '\n{"step": 4')
  writer = metrics.MetricWriter(str(directory), 'train_ad', resume_step=20)
  assert writer.last_row()['step'] == 20
  writer.write(30, {'loss': 0.5})
  writer.close()
  lines = (directory / 'train_ad.jsonl').read_text().splitlines()
  assert [json.loads(line)['step'] for line in lines] == [10, 20, 30]
  assert json.loads(lines[-1])['loss'] == 0.5
  assert any('cut short' in r.getMessage() for r in caplog.records)


@pytest.fixture(scope='module')
def finished(tmp_path_factory):
  """A finished smoke run: histories, AD trained, evaluated."""
  workdir = str(tmp_path_factory.mktemp('finished') / 'run')
  main.run(_smoke(), workdir)
  return workdir


def _results(workdir):
  with open(os.path.join(workdir, 'eval', 'results.json')) as f:
    return json.load(f)


def test_an_evaluation_change_is_never_reported_under_the_old_results(
  finished,
):
  before = _results(finished)
  assert before['temperature'] == 0.5
  hotter = _smoke()
  hotter.evaluation.temperature = 1.0
  # The report alone would show results of temperature 0.5 as this
  # config's: refused, naming the remedy.
  with pytest.raises(files.FileError, match='run --mode eval'):
    main.run(hotter, finished, 'report')
  main.run(hotter, finished)  # all: evaluation runs again
  assert _results(finished)['temperature'] == 1.0
  main.run(_smoke(), finished)  # and back
  assert _results(finished) == {
    **before,
    'seconds': _results(finished)['seconds'],
  }


def test_a_bad_evaluation_value_leaves_good_results_as_they_were(finished):
  path = os.path.join(finished, 'eval', 'results.json')
  with open(path) as f:
    before = f.read()
  config = _smoke()
  config.evaluation.num_episodes = 0
  with pytest.raises(ValueError, match='evaluation.num_episodes=0'):
    main.run(config, finished, 'eval')
  with open(path) as f:
    assert f.read() == before


def test_results_equal_to_the_current_config_are_kept(finished):
  path = os.path.join(finished, 'eval', 'results.json')
  main.run(_smoke(), finished)
  stamp = os.path.getmtime(path)
  main.run(_smoke(), finished)  # nothing changed: nothing re-evaluated
  assert os.path.getmtime(path) == stamp


def test_a_partly_trained_model_is_refused_unless_asked_for(tmp_path, finished):
  workdir = str(tmp_path / 'partial')
  os.makedirs(workdir)
  os.symlink(os.path.join(finished, 'histories'), f'{workdir}/histories')
  config = _smoke()
  train.train_and_evaluate(config, workdir, progress=False, until=10)
  with pytest.raises(checkpoints.CheckpointError, match='update 10 of 20'):
    main.run(config, workdir, 'eval')
  assert not os.path.exists(os.path.join(workdir, 'eval'))
  config.evaluation.allow_partial = True
  main.run(config, workdir, 'eval')
  entry = _results(workdir)['methods']['ad']['test']
  assert entry['partial'] is True and entry['checkpoint_step'] == 10
  main.run(config, workdir, 'report')  # the summary says so
  with open(os.path.join(workdir, 'eval', 'summary.md')) as f:
    assert '| AD (partial: update 10) | test |' in f.read()
  # Training on: the results of the partial model are stale, and redone.
  main.run(_smoke(), workdir)
  entry = _results(workdir)['methods']['ad']['test']
  assert entry['partial'] is False and entry['checkpoint_step'] == 20


def _copy_run(finished, workdir):
  """A copy of the finished run's checkpoints beside its histories."""
  os.makedirs(workdir)
  os.symlink(os.path.join(finished, 'histories'), f'{workdir}/histories')
  shutil.copytree(f'{finished}/checkpoints', f'{workdir}/checkpoints')
  return workdir


def _flip_bytes(directory):
  for root, _, names in os.walk(directory):
    for name in names:
      with open(os.path.join(root, name), 'r+b') as f:
        data = bytearray(f.read())
        data[len(data) // 2] ^= 0xFF
        f.seek(0)
        f.write(data)


@pytest.mark.parametrize(
  'corrupt',
  [
    lambda step: _flip_bytes(f'{step}/state/d'),
    lambda step: os.remove(f'{step}/state/_METADATA'),
  ],
  ids=['flipped_bytes', 'no_metadata'],
)
def test_an_unreadable_checkpoint_is_named_and_training_falls_back(
  tmp_path, finished, corrupt, caplog
):
  workdir = _copy_run(finished, str(tmp_path / 'run'))
  config = _smoke()
  _, before = checkpoints.restore_params(config, workdir)
  path = checkpoints.directory(workdir, 'ad')
  corrupt(f'{path}/20')
  with pytest.raises(
    checkpoints.CorruptCheckpointError,
    match=r'update 20 in .* cannot be read .*Run --mode train',
  ):
    main.run(config, workdir, 'eval')
  main.run(config, workdir, 'train')  # sets 20 aside, trains 10 -> 20 again
  assert any('Set aside as' in r.getMessage() for r in caplog.records)
  assert os.path.isdir(f'{path}/corrupt_20')
  _, after = checkpoints.restore_params(config, workdir)
  chex.assert_trees_all_equal(before, after)  # bit for bit


def test_a_preemption_notice_saves_where_training_is_and_the_rerun_resumes(
  tmp_path, finished, monkeypatch
):
  """The second check (the first after a chunk of 10 updates) says a notice
  came: AD saves update 10 and stops the pipeline; the same run again
  resumes and ends with the uninterrupted run's parameters, bit for bit."""
  checks = iter(range(1, 100))
  monkeypatch.setattr(checkpoints, 'preempted', lambda: next(checks) == 2)
  workdir = str(tmp_path / 'run')
  with pytest.raises(checkpoints.Preempted, match='ad stopped at update 10'):
    main.run(_smoke(), workdir)
  saved = checkpoints.provenance(workdir, 'ad')
  assert saved.step == 10 and not saved.finished
  assert not os.path.exists(os.path.join(workdir, 'eval'))
  monkeypatch.undo()
  main.run(_smoke(), workdir)
  _, resumed = checkpoints.restore_params(_smoke(), workdir)
  _, whole = checkpoints.restore_params(_smoke(), finished)
  chex.assert_trees_all_equal(resumed, whole)


def test_provenance_names_the_checkpoints_and_the_config(finished):
  recorded = _results(finished)['provenance']
  assert recorded == evaluate.provenance(_smoke(), finished)
  assert recorded['checkpoints'] == {'ad': 20}
  found = checkpoints.provenance(finished, 'ad')
  assert found.finished and found.num_steps == 20
  assert found.config == config_lib.training_fields(_smoke(), 'ad')


@pytest.mark.slow  # a CLI subprocess
def test_the_command_line_says_a_bad_value_in_one_line(tmp_path):
  workdir = tmp_path / 'run'
  proc = subprocess.run(
    [sys.executable, '-m', 'algdist.main']
    + ['--config', 'configs/dark_room.py:smoke', '--workdir', str(workdir)]
    + ['--config.train.batch_size=0'],
    capture_output=True,
    text=True,
    timeout=120,
  )
  assert proc.returncode != 0
  assert 'Traceback' not in proc.stderr
  assert (
    'FATAL ValueError: train.batch_size=0: must be >= 1.'
    in proc.stderr.splitlines()
  )
  assert not workdir.exists()


# A longer training run, so that a kill lands in the middle of it.
_LONG = (
  '--config.train.num_steps=600',
  '--config.train.checkpoint_every=100',
  '--config.train.log_every=50',
  '--config.train.methods=("ad",)',
  '--config.evaluation.methods=("ad","random")',
)


def _cli(workdir):
  return [
    sys.executable,
    '-m',
    'algdist.main',
    '--config',
    'configs/dark_room.py:smoke',
    '--workdir',
    str(workdir),
    *_LONG,
  ]


@pytest.mark.slow  # three CLI runs
@pytest.mark.parametrize('how', [signal.SIGKILL, signal.SIGTERM])
def test_a_run_stopped_mid_training_resumes_to_identical_results(tmp_path, how):
  """SIGKILL: no cleanup of any kind; the run resumes from its last
  checkpoint. SIGTERM: a preemption notice; the run saves where it is,
  says so and exits 143."""
  whole = tmp_path / 'whole'
  subprocess.run(_cli(whole), check=True, capture_output=True, timeout=600)
  killed = tmp_path / 'killed'
  proc = subprocess.Popen(
    _cli(killed), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
  )
  first = killed / 'checkpoints' / 'ad' / '100' / 'commit_success.txt'
  deadline = time.monotonic() + 300
  while not first.exists() and proc.poll() is None:
    assert time.monotonic() < deadline
    time.sleep(0.05)
  proc.send_signal(how)
  _, stderr = proc.communicate(timeout=120)
  assert not (killed / 'eval' / 'results.json').exists()
  if how == signal.SIGTERM:
    assert proc.returncode == 143, stderr
    (line,) = [x for x in stderr.splitlines() if x.startswith('PREEMPTED')]
    step = int(line.split('update ')[1].split()[0])
    assert 100 < step < 600
    saved = checkpoints.provenance(str(killed), 'ad')
    assert saved.step == step and not saved.finished
  subprocess.run(_cli(killed), check=True, capture_output=True, timeout=600)
  config = dark_room.get_config('smoke')
  config.train.update(num_steps=600, checkpoint_every=100, methods=('ad',))
  _, a = checkpoints.restore_params(config, str(whole))
  _, b = checkpoints.restore_params(config, str(killed))
  chex.assert_trees_all_equal(a, b)  # bit for bit
  strip = lambda r: {k: v for k, v in r.items() if k != 'seconds'}
  assert strip(_results(str(whole))) == strip(_results(str(killed)))
