"""Dark Room: in-context RL on a 9x9 grid with an unseen goal.

Commands (from the repository root):
  python -m algdist.main --config configs/dark_room.py --mode generate
  python -m algdist.main --config configs/dark_room.py:smoke --workdir /tmp/dr
  python -m algdist.main --config configs/dark_room.py:paper   # accelerators

Presets: `smoke` (seconds; tests use it), default (a laptop CPU, minutes),
`paper` (the paper's scale: about 2,000 histories from A3C-style learners with
100 actors; for accelerators).

Expected (default, 2-core CPU): 1,024 PPO histories, each from random (about
1% of optimal in its first episode) to >= 90% of optimal over its last ten
episodes, in under a minute with compilation.
"""

import ml_collections


def get_config(preset: str | None = None) -> ml_collections.ConfigDict:
  """The Dark Room experiment; `preset` is None, 'smoke' or 'paper'."""
  preset = preset or 'default'
  if preset not in ('smoke', 'default', 'paper'):
    raise ValueError(
      f"Unknown preset '{preset}' for dark_room: use smoke, paper, or none."
    )
  config = ml_collections.ConfigDict()
  config.preset = preset  # which preset this config came from

  config.env = ml_collections.ConfigDict()
  config.env.name = 'dark_room'  # task family, see algdist.envs.names()
  # Fields of the family's EnvParams to override (e.g. num_test_tasks).
  config.env.overrides = ml_collections.ConfigDict()
  config.env.overrides.split_seed = 0  # fixes which 16 goals are held out

  # The source algorithm whose learning histories AD distils.
  config.source = ml_collections.ConfigDict()
  config.source.algorithm = 'ppo'  # see algdist.agents.names()
  # Overrides of that algorithm's default config (algdist/agents/*.py).
  config.source.config = ml_collections.ConfigDict()
  config.source.config.num_actors = 16  # actors (= streams) per learner
  config.source.config.num_updates = 100  # updates of 20 steps: 100 episodes

  config.histories = ml_collections.ConfigDict()
  config.histories.num_tasks = 64  # training goals with learners (of 65)
  config.histories.learners_per_task = 1  # independent learners per goal
  config.histories.learners_per_shard = 32  # learners per jit call and file
  config.histories.subsample_every = 1  # keep every k-th episode
  config.histories.seed = 0  # seeds tasks order and learners

  if preset == 'smoke':
    config.source.config.num_actors = 4
    config.source.config.num_updates = 5
    config.histories.num_tasks = 4
    config.histories.learners_per_shard = 2
  elif preset == 'paper':
    config.source.config.num_actors = 100
    config.source.config.num_updates = 500
    config.histories.num_tasks = 20
    config.histories.learners_per_shard = 4
  return config
