"""Watermaze (a JAX stand-in for DMLab's rooms_watermaze), from pixels.

Commands (from the repository root):
  python -m algdist.main --config configs/dmlab_watermaze.py  # every stage
  python -m algdist.main --config configs/dmlab_watermaze.py --mode generate
  python -m algdist.main --config configs/dmlab_watermaze.py --mode train
  python -m algdist.main --config configs/dmlab_watermaze.py --mode eval
  python -m algdist.main --config configs/dmlab_watermaze.py --mode report
  python -m algdist.main --config configs/dmlab_watermaze.py:smoke \
      --workdir /tmp/wm
  python -m algdist.main --config configs/dmlab_watermaze.py:paper  # accel.
The default workdir is runs/dmlab_watermaze[-PRESET]; `--mode all` (the
default) runs generate -> train (AD, then ED) -> eval -> report, skipping
finished stages.

What differs from DeepMind Lab is in algdist/envs/watermaze.py's docstring.

Presets: `smoke` (seconds; tests use it), default (a laptop CPU, minutes),
`paper` (the paper's scale: distributed DQN with 16 actors, about 4,000
histories; for accelerators).

Expected (default, 2-core CPU): 32 DQN histories (2 platforms x 16 actors)
of 3,000 first-person frames (60 episodes of 50 steps) in about a minute
with compilation and 6 GB of memory; platform visits per episode rise from
about 0.15 (random) to about 0.4 over the last ten episodes, still rising
as epsilon falls (the paper preset runs 8,000 steps).

Measured (RESULTS.md; 30 minutes, shared CPU; source baseline left out):
on 16 held-out platform positions x 2 seeds AD goes from 0.03 platform
visits in the first of 16 episodes to 0.28 in the last, but random (0.06
-> 0.16) and ED (0.16 -> 0.25) rise alike: no in-context learning shown at
this scale (2 training positions, 300 updates). With 8 training platforms,
600 updates and 16 x 8 rollouts AD stays flat (0.24 over episodes 1-4,
0.23 over 13-16; random 0.17, 0.20): its loss stays at 1.62 nats, and the
paper preset's training needs an accelerator.
"""

import ml_collections

from algdist import config_lib


def get_config(preset: str | None = None) -> ml_collections.ConfigDict:
  """The Watermaze experiment; `preset` is None, 'smoke', 'paper',
  'search' or 'search_smoke'."""
  preset = preset or 'default'
  if preset not in ('smoke', 'default', 'paper', 'search', 'search_smoke'):
    raise ValueError(
      f"Unknown preset '{preset}' for dmlab_watermaze: use smoke, paper, "
      'search, search_smoke, or none.'
    )
  if preset.startswith('search'):
    return _search(preset)
  config = ml_collections.ConfigDict()
  config.preset = preset  # which preset this config came from

  config.env = ml_collections.ConfigDict()
  config.env.name = 'watermaze'  # task family, see algdist.envs.names()
  # Fields of the family's EnvParams to override (e.g. num_test_cells).
  config.env.overrides = ml_collections.ConfigDict()
  # Fixes which 8 of the 44 platform lattice cells are held out.
  config.env.overrides.split_seed = 0

  # The source algorithm whose learning histories AD distils, with every
  # setting of its Config (algdist/agents/dqn.py); changed here:
  config.source = config_lib.source(
    'dqn',
    num_actors=16,  # actors (= streams) per learner
    # Env steps per actor: the history's length (60 episodes of 50 steps).
    num_steps=3000,
    # Replay capacity in transitions over all actors (20.7 KB each).
    buffer_size=4096,
    learning_starts=1024,  # transitions before learning
  )

  config.histories = ml_collections.ConfigDict()
  config.histories.num_tasks = 2  # training platform positions with learners
  config.histories.learners_per_task = 1  # independent learners per platform
  # Learners per jit call and file: each holds its whole pixel history
  # (16 x 3,000 frames x 20.7 KB = 1 GB) and its replay on the device.
  config.histories.learners_per_shard = 1
  config.histories.subsample_every = 1  # keep every k-th episode
  config.histories.seed = 0  # seeds tasks order and learners

  # AD: the paper's Dark Room model (embedding 64, 4 layers, 4 heads, here
  # behind a small conv net) with a narrower feed-forward (256, not 2048)
  # for a CPU; 150 steps of context span three 50-step episodes.
  config.model = config_lib.model(context_steps=150)
  # Only 2 platforms have learners: holding one out for validation would
  # leave a single platform to train on, so no held-out loss here.
  config.data = config_lib.data(window_steps=300, validation_tasks=0.0)
  # About 5 minutes per method on a 2-core CPU: the conv net runs on every
  # frame, 300 x 8 x 300 = 720k of them at the 2,200 frames/s measured
  # (shared machine, load 1). That is few updates for a model that reads
  # pixels: raise train.num_steps where time allows.
  config.train = config_lib.train(num_steps=300, batch_size=8, warmup_steps=50)
  # The last 10 of 60 episodes (500 steps): episodes last 50 steps.
  config.ed = config_lib.ed(expert_episodes=10)
  config.sharding = config_lib.sharding()
  config.evaluation = config_lib.evaluation(num_episodes=16)
  # Platforms are continuous positions (there is no "all"). The source
  # baseline is a 16-actor DQN learner per task and seed (48,000 steps and
  # 1 GB of frames each, about 10 s at the benchmarked 4,600 steps/s), so
  # few of them: 40 learners, about 7 minutes.
  config.evaluation.num_test_tasks = 16
  config.evaluation.num_train_tasks = 4
  config.evaluation.num_seeds = 2

  if preset == 'smoke':
    config.source.config.num_actors = 2
    config.source.config.num_steps = 100  # two episodes
    config.source.config.buffer_size = 64
    config.source.config.learning_starts = 32
    # A one-layer Q-network: less to compile (generate and eval build it).
    config.source.config.conv_features = (8,)  # channels
    config.source.config.patch_sizes = (8,)  # pixels: 72x96 -> 9x12
    config.source.config.hidden = (32,)  # units
    config.source.config.batch_size = 16  # transitions per gradient step
    config.histories.num_tasks = 1
    config.model.update(context_steps=10, num_layers=1, d_model=16, d_ff=32)
    config.data.window_steps = 20
    config.train.update(
      num_steps=20, batch_size=8, warmup_steps=5, log_every=10, eval_every=10
    )
    config.train.checkpoint_every = 10
    config.ed.expert_episodes = 1  # the last of 2 episodes
    config.evaluation.update(
      num_episodes=2, num_test_tasks=2, num_train_tasks=2, num_seeds=2
    )
  elif preset == 'paper':
    # Paper: distributed DQN with 16 actors; about 4,000 histories. Every
    # frame is kept: 4,000 x 8,000 x 20.7 KB = 660 GB on disk (raise
    # histories.subsample_every to keep fewer episodes).
    config.source.config.num_steps = 8000  # 160 episodes per stream
    config.histories.num_tasks = 250  # x 16 actors: 4,000 histories
    config.histories.learners_per_shard = 2  # 5.3 GB of frames per call
    config.model.d_ff = 2048  # the paper's
    config.data.validation_tasks = 0.1  # 25 of 250 platforms
    config.train.update(num_steps=100_000, batch_size=128, warmup_steps=500)
  return config


def _search(preset: str) -> ml_collections.ConfigDict:
  """The pose-search source (algdist/agents/pose_search.py) at 24x32."""
  config = get_config()
  config.preset = preset
  # A third of DMLab's resolution, rendered at this size (not downsampled):
  # a one-frame pose regressor localises to 0.04-0.05 arena units at 24x32
  # (platform radius 0.15), and the conv net costs a ninth as much.
  config.env.overrides.image_height = 24
  config.env.overrides.image_width = 32
  # Sweeps the arena by its pose (which AD never sees) until a step pays,
  # then walks back there from every respawn: visits per episode rise from
  # about 1 to 5 within 3-4 episodes, inside AD's context.
  config.source = config_lib.source('pose_search', num_actors=4, num_steps=800)
  config.histories.num_tasks = 64  # training platforms
  config.histories.learners_per_shard = 16
  # 24x32 -> 6x8x16 -> 3x4x32 -> Dense to D.
  config.model = config_lib.model(context_steps=150, num_layers=2, dropout=0.0)
  config.model.conv_layers = ((16, 4, 4), (32, 2, 2))
  config.data = config_lib.data(window_steps=300, validation_tasks=0.1)
  config.train = config_lib.train(
    num_steps=2000, batch_size=16, learning_rate=1e-3, warmup_steps=100
  )
  config.train.eval_every = 500
  # The last 6 of 16 episodes: one 300-step window of the search exploiting.
  config.ed = config_lib.ed(expert_episodes=6, num_steps=500)
  config.evaluation = config_lib.evaluation(num_episodes=16)
  # 32 held-out platforms x 4 seeds = 128 rollouts.
  config.evaluation.num_test_tasks = 32
  config.evaluation.num_train_tasks = 16
  config.evaluation.num_seeds = 4
  # Greedy: chosen on training platforms (3.70 visits in episodes 13-16
  # greedy against 2.72 at temperature 1, RESULTS.md).
  config.evaluation.temperature = 0.0
  if preset == 'search_smoke':
    config.source.config.update(num_actors=2, num_steps=100)
    config.histories.update(num_tasks=2, learners_per_shard=2)
    config.model.update(context_steps=10, num_layers=1, d_model=16, d_ff=32)
    config.data.update(window_steps=20, validation_tasks=0.0)
    config.train.update(
      num_steps=20, batch_size=8, warmup_steps=5, log_every=10, eval_every=10
    )
    config.train.checkpoint_every = 10
    config.ed.update(expert_episodes=1, num_steps=0)
    config.evaluation.update(
      num_episodes=2, num_test_tasks=2, num_train_tasks=2, num_seeds=2
    )
  return config
