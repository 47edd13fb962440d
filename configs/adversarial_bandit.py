"""Adversarial Bandit: 10 Bernoulli arms; the best arm moves between splits.

Commands (from the repository root):
  python -m algdist.main --config configs/adversarial_bandit.py --mode generate
  python -m algdist.main --config configs/adversarial_bandit.py:smoke \
      --workdir /tmp/bandit
  python -m algdist.main --config configs/adversarial_bandit.py:paper

Presets: `smoke` (seconds; tests use it), default (a laptop CPU, seconds
here: UCB is cheap), `paper` (many more training bandits; still a CPU job).

Expected (default, 2-core CPU): 2,048 UCB histories of 100 pulls (a pull is
an episode), the mean reward per pull rising from the average arm's (about
0.5) toward the best arm's (about 0.9) with cumulative regret growing
sublinearly, in seconds.
"""

import ml_collections


def get_config(preset: str | None = None) -> ml_collections.ConfigDict:
  """The Adversarial Bandit experiment; `preset` is None, 'smoke' or 'paper'."""
  preset = preset or 'default'
  if preset not in ('smoke', 'default', 'paper'):
    raise ValueError(
      f"Unknown preset '{preset}' for adversarial_bandit: use smoke, paper, "
      'or none.'
    )
  config = ml_collections.ConfigDict()
  config.preset = preset  # which preset this config came from

  config.env = ml_collections.ConfigDict()
  config.env.name = 'adversarial_bandit'  # see algdist.envs.names()
  # Fields of the family's EnvParams to override (e.g. shift_prob).
  config.env.overrides = ml_collections.ConfigDict()
  # Seeds the family of arm means (an integer); train and test draw apart.
  config.env.overrides.split_seed = 0

  # The source algorithm whose learning histories AD distils.
  config.source = ml_collections.ConfigDict()
  config.source.algorithm = 'ucb'  # see algdist.agents.names()
  # Overrides of that algorithm's default config (algdist/agents/*.py).
  config.source.config = ml_collections.ConfigDict()
  config.source.config.num_pulls = 100  # pulls (= 1-step episodes) per history
  config.source.config.num_actors = 1  # streams sharing one learner's counts

  config.histories = ml_collections.ConfigDict()
  config.histories.num_tasks = 2048  # training bandits (arm-mean vectors)
  config.histories.learners_per_task = 1  # independent learners per bandit
  config.histories.learners_per_shard = 1024  # learners per jit call and file
  config.histories.subsample_every = 1  # keep every k-th episode
  config.histories.seed = 0  # seeds the bandits drawn and learners

  if preset == 'smoke':
    config.histories.num_tasks = 8
    config.histories.learners_per_shard = 4
  elif preset == 'paper':
    config.histories.num_tasks = 20_000
    config.histories.learners_per_shard = 5000
  return config
