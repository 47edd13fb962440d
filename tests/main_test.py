"""The command line's run(): workdirs of another config are refused."""

import json
import os

import pytest

from algdist import main
from configs import dark_room


def test_a_workdir_of_another_config_is_refused_and_eval_changes_allowed(
  tmp_path,
):
  workdir = str(tmp_path)
  config = dark_room.get_config('smoke')
  main.write_config(config, workdir)
  assert main.check_workdir(config, workdir) == {}
  other = dark_room.get_config('smoke')
  other.train.num_steps = 30
  with pytest.raises(ValueError, match=r'train.num_steps: 20 -> 30'):
    main.check_workdir(other, workdir)
  # Evaluation settings may change: eval runs again on the same checkpoints.
  hotter = dark_room.get_config('smoke')
  hotter.evaluation.temperature = 0.5
  assert main.check_workdir(hotter, workdir) == {
    'evaluation.temperature': (1.0, 0.5)
  }
  with open(os.path.join(workdir, 'config.json')) as f:
    assert json.load(f)['train']['num_steps'] == 20
