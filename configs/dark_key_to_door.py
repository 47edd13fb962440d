"""Dark Key-to-Door: find an unseen key, then an unseen door, on a 9x9 grid.

Commands (from the repository root):
  python -m algdist.main --config configs/dark_key_to_door.py --mode generate
  python -m algdist.main --config configs/dark_key_to_door.py:smoke \
      --workdir /tmp/k2d
  python -m algdist.main --config configs/dark_key_to_door.py:paper  # accel.

Presets: `smoke` (seconds; tests use it), default (a laptop CPU, minutes),
`paper` (the paper's scale: about 2,000 training tasks; for accelerators).

Expected (default, 2-core CPU): 1,024 PPO histories of 6,000 steps (about
200 to 700 episodes: an episode ends at the door), each from random (about
13% of optimal in its first episode) to >= 90% of optimal over its last ten
episodes, in under a minute with compilation.
"""

import ml_collections


def get_config(preset: str | None = None) -> ml_collections.ConfigDict:
  """The Key-to-Door experiment; `preset` is None, 'smoke' or 'paper'."""
  preset = preset or 'default'
  if preset not in ('smoke', 'default', 'paper'):
    raise ValueError(
      f"Unknown preset '{preset}' for dark_key_to_door: use smoke, paper, "
      'or none.'
    )
  config = ml_collections.ConfigDict()
  config.preset = preset  # which preset this config came from

  config.env = ml_collections.ConfigDict()
  config.env.name = 'dark_key_to_door'  # task family, see algdist.envs.names()
  # Fields of the family's EnvParams to override (e.g. num_test_tasks).
  config.env.overrides = ml_collections.ConfigDict()
  # Fixes which 1,000 of the 6,480 (key, door) pairs are held out.
  config.env.overrides.split_seed = 0

  # The source algorithm whose learning histories AD distils.
  config.source = ml_collections.ConfigDict()
  config.source.algorithm = 'ppo'  # see algdist.agents.names()
  # Overrides of that algorithm's default config (algdist/agents/*.py).
  config.source.config = ml_collections.ConfigDict()
  config.source.config.num_actors = 16  # actors (= streams) per learner
  # Updates of 20 steps: 6,000 steps. At 3,000, 2 of 64 learners had found
  # the key but not yet the door.
  config.source.config.num_updates = 300
  # Step size falls linearly to 0 (bool), as for Dark Room.
  config.source.config.anneal_learning_rate = True
  # The policy also sees the return so far in the episode (bool), i.e.
  # whether it holds the key: without it a policy of (x, y) alone stalled
  # at about 80% of optimal (it must act alike on a cell before and after
  # the key).
  config.source.config.observe_episode_return = True

  config.histories = ml_collections.ConfigDict()
  config.histories.num_tasks = 64  # training (key, door) pairs with learners
  config.histories.learners_per_task = 1  # independent learners per task
  config.histories.learners_per_shard = 32  # learners per jit call and file
  config.histories.subsample_every = 1  # keep every k-th episode
  config.histories.seed = 0  # seeds tasks order and learners

  if preset == 'smoke':
    config.source.config.num_actors = 4
    config.source.config.num_updates = 5
    config.histories.num_tasks = 4
    config.histories.learners_per_shard = 2
  elif preset == 'paper':
    # 2,000 tasks x 4 actors: 8,000 histories of 6,000 steps (4 actors per
    # learner reached >= 90% of optimal on every one of 16 tasks on CPU).
    config.source.config.num_actors = 4
    config.source.config.num_updates = 300
    config.histories.num_tasks = 2000
    config.histories.learners_per_shard = 250
  return config
