"""Every Watermaze preset's smoke run, end to end (the default preset's,
Dyna-Q's and the paper's here; `search_smoke` in encoder_test.py): apart from
configs_test.py so that they run beside its pipelines."""

import json
import os

import pytest
from configs_test import check_smoke_results, locked

from algdist import main


@pytest.mark.parametrize('preset', ['smoke', 'dyna_q_smoke', 'paper_smoke'])
def test_watermaze_smoke_pipeline_writes_results_of_the_contract(
  preset, tmp_path
):
  config = locked('dmlab_watermaze', preset)
  workdir = str(tmp_path / preset)
  main.run(config, workdir)
  check_smoke_results('dmlab_watermaze', config, workdir)
  with open(os.path.join(workdir, 'eval', 'results.json')) as f:
    source = json.load(f)['methods']['source']['test']
  # DQN's actors pool their experience; each R-max or Dyna-Q actor learns
  # alone.
  pooled = config.source.config.num_actors if preset == 'paper_smoke' else 1
  assert (
    source['episodes_of_experience_per_episode']
    == pooled
    == (2 if preset == 'paper_smoke' else 1)
  )
