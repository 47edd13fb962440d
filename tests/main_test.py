"""The command line's run(): workdirs of another config are refused."""

import json
import os
import subprocess
import sys

import pytest

from algdist import checkpoints, histories, main, train
from configs import dark_room


def test_a_workdir_of_another_config_is_refused_and_eval_changes_allowed(
  tmp_path,
):
  workdir = str(tmp_path)
  config = dark_room.get_config('smoke')
  config.train.update(num_steps=4, warmup_steps=1, checkpoint_every=4)
  config.data.num_validation_windows = 0
  main.write_config(config, workdir)
  # Nothing made yet: any field may still change (a corrected value).
  other = dark_room.get_config('smoke')
  other.train.num_steps = 30
  assert main.check_workdir(other, workdir)['train.num_steps'] == (4, 30)
  histories.generate(
    histories.spec_from_config(config),
    os.path.join(workdir, 'histories'),
    progress=False,
  )
  train.train_and_evaluate(config, workdir, 'ad', progress=False)
  # A checkpoint was trained with num_steps=4: a change is refused...
  other = dark_room.get_config('smoke')
  other.train.update(num_steps=30, warmup_steps=1, checkpoint_every=4)
  other.data.num_validation_windows = 0
  with pytest.raises(
    ValueError, match=r'(?s)ad checkpoints in .*train.num_steps: 4 -> 30'
  ):
    main.check_workdir(other, workdir)
  # ...also with config.json gone: the checkpoint records its own.
  os.remove(os.path.join(workdir, 'config.json'))
  with pytest.raises(ValueError, match='ad checkpoints in'):
    main.check_workdir(other, workdir)
  with pytest.raises(checkpoints.CheckpointError, match='another config'):
    train.train_and_evaluate(other, workdir, 'ad', progress=False)
  # Settings that change no weight (bookkeeping, evaluation) may change.
  fine = dark_room.get_config('smoke')
  fine.train.update(num_steps=4, warmup_steps=1, checkpoint_every=4)
  fine.data.num_validation_windows = 0
  fine.train.log_every = 2
  fine.evaluation.temperature = 1.0
  assert main.check_workdir(fine, workdir) == {}
  # Histories of another source are refused alike.
  source = dark_room.get_config('smoke')
  source.histories.seed = 1
  with pytest.raises(ValueError, match='the histories in'):
    main.check_workdir(source, workdir)


@pytest.mark.slow  # CLI subprocesses
@pytest.mark.parametrize(
  'override, says',
  [
    ('--config.train.num_step=3', "no field 'num_step'; did you mean"),
    ('--config.trian.num_steps=3', "no field 'trian'; did you mean"),
    # Every setting of the source algorithm is in the config, so any of
    # them can be overridden; a misspelt one is named.
    ('--config.source.config.exploraton=0.5', "'exploraton'"),
    ('--config.train.num_steps=abc', 'invalid literal for int()'),
  ],
)
def test_a_bad_override_is_one_clear_line_and_nothing_runs(
  tmp_path, override, says
):
  workdir = tmp_path / 'run'
  proc = subprocess.run(
    [sys.executable, '-m', 'algdist.main']
    + ['--config', 'configs/adversarial_bandit.py:smoke']
    + ['--workdir', str(workdir), override],
    capture_output=True,
    text=True,
    timeout=120,
  )
  assert proc.returncode != 0
  assert 'Traceback' not in proc.stderr
  assert f'FATAL Flags parsing error: {override.split("=")[0]}' in (
    proc.stderr.replace('flag ', '')
  )
  assert says in proc.stderr
  assert not workdir.exists()


@pytest.mark.slow  # a CLI subprocess
def test_a_source_setting_the_config_file_leaves_alone_can_be_overridden(
  tmp_path,
):
  workdir = tmp_path / 'run'
  subprocess.run(
    [sys.executable, '-m', 'algdist.main']
    + ['--config', 'configs/adversarial_bandit.py:smoke']
    + ['--workdir', str(workdir), '--mode', 'generate']
    + ['--config.source.config.exploration=0.25'],
    check=True,
    capture_output=True,
    timeout=300,
  )
  with open(workdir / 'config.json') as f:
    assert json.load(f)['source']['config']['exploration'] == 0.25


@pytest.mark.slow  # CLI subprocesses
def test_compiled_programs_are_kept_across_runs_unless_turned_off(tmp_path):
  def generate(workdir, **environ):
    env = {**os.environ, **environ}
    env.pop('JAX_COMPILATION_CACHE_DIR')  # the test run's own cache
    subprocess.run(
      [sys.executable, '-m', 'algdist.main']
      + ['--config', 'configs/adversarial_bandit.py:smoke']
      + ['--workdir', str(tmp_path / workdir), '--mode', 'generate'],
      env=env,
      check=True,
      capture_output=True,
      timeout=300,
    )

  # The default: $XDG_CACHE_HOME/algdist/jax.
  generate('a', XDG_CACHE_HOME=str(tmp_path / 'xdg'))
  kept = os.listdir(tmp_path / 'xdg' / 'algdist' / 'jax')
  assert any(name.startswith('jit_') for name in kept)
  generate(
    'b', XDG_CACHE_HOME=str(tmp_path / 'off'), ALGDIST_COMPILATION_CACHE=''
  )
  assert not (tmp_path / 'off' / 'algdist').exists()
