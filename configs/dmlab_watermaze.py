"""Watermaze (a JAX stand-in for DMLab's rooms_watermaze), from pixels.

Commands (from the repository root):
  python -m algdist.main --config configs/dmlab_watermaze.py:smoke \
      --workdir /tmp/wm --mode generate
  python -m algdist.main --config configs/dmlab_watermaze.py --mode generate
  python -m algdist.main --config configs/dmlab_watermaze.py:paper  # accel.

What differs from DeepMind Lab is in algdist/envs/watermaze.py's docstring.

Presets: `smoke` (seconds; tests use it), default (a laptop CPU, minutes),
`paper` (the paper's scale: distributed DQN with 16 actors, about 4,000
histories; for accelerators).

Expected (default, 2-core CPU): 32 DQN histories (2 platforms x 16 actors)
of 3,000 first-person frames (60 episodes of 50 steps) in about a minute
with compilation and 6 GB of memory; platform visits per episode rise from
about 0.15 (random) to about 0.4 over the last ten episodes, still rising
as epsilon falls (the paper preset runs 8,000 steps).
"""

import ml_collections


def get_config(preset: str | None = None) -> ml_collections.ConfigDict:
  """The Watermaze experiment; `preset` is None, 'smoke' or 'paper'."""
  preset = preset or 'default'
  if preset not in ('smoke', 'default', 'paper'):
    raise ValueError(
      f"Unknown preset '{preset}' for dmlab_watermaze: use smoke, paper, or "
      'none.'
    )
  config = ml_collections.ConfigDict()
  config.preset = preset  # which preset this config came from

  config.env = ml_collections.ConfigDict()
  config.env.name = 'watermaze'  # task family, see algdist.envs.names()
  # Fields of the family's EnvParams to override (e.g. num_test_cells).
  config.env.overrides = ml_collections.ConfigDict()
  # Fixes which 8 of the 44 platform lattice cells are held out.
  config.env.overrides.split_seed = 0

  # The source algorithm whose learning histories AD distils.
  config.source = ml_collections.ConfigDict()
  config.source.algorithm = 'dqn'  # see algdist.agents.names()
  # Overrides of that algorithm's default config (algdist/agents/dqn.py).
  config.source.config = ml_collections.ConfigDict()
  config.source.config.num_actors = 16  # actors (= streams) per learner
  # Env steps per actor: the history's length (60 episodes of 50 steps).
  config.source.config.num_steps = 3000
  # Replay capacity in transitions over all actors (20.7 KB each).
  config.source.config.buffer_size = 4096
  config.source.config.learning_starts = 1024  # transitions before learning

  config.histories = ml_collections.ConfigDict()
  config.histories.num_tasks = 2  # training platform positions with learners
  config.histories.learners_per_task = 1  # independent learners per platform
  # Learners per jit call and file: each holds its whole pixel history
  # (16 x 3,000 frames x 20.7 KB = 1 GB) and its replay on the device.
  config.histories.learners_per_shard = 1
  config.histories.subsample_every = 1  # keep every k-th episode
  config.histories.seed = 0  # seeds tasks order and learners

  if preset == 'smoke':
    config.source.config.num_actors = 2
    config.source.config.num_steps = 50  # one episode
    config.source.config.buffer_size = 64
    config.source.config.learning_starts = 32
    config.histories.num_tasks = 1
  elif preset == 'paper':
    # Paper: distributed DQN with 16 actors; about 4,000 histories. Every
    # frame is kept: 4,000 x 8,000 x 20.7 KB = 660 GB on disk (raise
    # histories.subsample_every to keep fewer episodes).
    config.source.config.num_steps = 8000  # 160 episodes per stream
    config.histories.num_tasks = 250  # x 16 actors: 4,000 histories
    config.histories.learners_per_shard = 2  # 5.3 GB of frames per call
  return config
