"""Dark Room: in-context RL on a 9x9 grid with an unseen goal.

Commands (from the repository root):
  python -m algdist.main --config configs/dark_room.py --mode generate
  python -m algdist.main --config configs/dark_room.py:smoke --workdir /tmp/dr
  python -m algdist.main --config configs/dark_room.py:paper   # accelerators
  python -m algdist.main --config configs/dark_room.py:ad_epsilon

Presets: `smoke` (seconds; tests use it), default (a laptop CPU, minutes),
`paper` (the paper's scale: about 2,000 histories from A3C-style learners with
100 actors; for accelerators), `ad_epsilon` (noise-distilled histories, the
one source so far under which AD learns in context on held-out goals).

Expected (default, 2-core CPU): 1,024 PPO histories, each from random (about
1% of optimal in its first episode) to >= 90% of optimal over its last ten
episodes, in under a minute with compilation.
"""

import ml_collections

from algdist import config_lib


def get_config(preset: str | None = None) -> ml_collections.ConfigDict:
  """The Dark Room experiment; `preset` is None, 'smoke', 'paper' or
  'ad_epsilon'."""
  preset = preset or 'default'
  if preset not in ('smoke', 'default', 'paper', 'ad_epsilon'):
    raise ValueError(
      f"Unknown preset '{preset}' for dark_room: use smoke, paper, "
      'ad_epsilon, or none.'
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
  # Step size falls linearly to 0 (bool): at a constant 5e-3 about 1 learner
  # in 20 fell off a learned goal late in the run and ended below 90%.
  config.source.config.anneal_learning_rate = True

  config.histories = ml_collections.ConfigDict()
  config.histories.num_tasks = 64  # training goals with learners (of 65)
  config.histories.learners_per_task = 1  # independent learners per goal
  config.histories.learners_per_shard = 32  # learners per jit call and file
  config.histories.subsample_every = 1  # keep every k-th episode
  config.histories.seed = 0  # seeds tasks order and learners

  # AD: the paper's Dark Room model (embedding 64, 4 layers, 4 heads) with a
  # narrower feed-forward (256, not 2048) so that a laptop CPU trains it in
  # minutes; 80 steps of context span four 20-step episodes.
  config.model = config_lib.model(context_steps=80)
  config.data = config_lib.data(window_steps=160, validation_tasks=0.1)
  config.train = config_lib.train(num_steps=1500, batch_size=32)
  config.ed = config_lib.ed(expert_episodes=10)  # the last 10 of 100 episodes
  config.sharding = config_lib.sharding()
  config.evaluation = config_lib.evaluation(num_episodes=40)

  if preset == 'ad_epsilon':
    # AD-epsilon (PAPER.md): the optimal policy with epsilon-noise falling
    # from 1 to 0 over 32 of 40 episodes, one stream per demonstrator: the
    # improvement is fast and visible inside a window, which AD needs.
    config.source.algorithm = 'noise_distillation'
    config.source.config = ml_collections.ConfigDict()
    config.source.config.num_steps = 800  # env steps per history: 40 episodes
    config.source.config.anneal_fraction = 0.8  # of the history, 1 -> 0
    config.histories.learners_per_task = 16  # demonstrators per goal
    config.histories.learners_per_shard = 256  # demonstrators per jit call
    config.train.num_steps = 1500  # measured: see README, Results so far
  if preset == 'smoke':
    config.source.config.num_actors = 4
    config.source.config.num_updates = 5
    config.histories.num_tasks = 4
    config.histories.learners_per_shard = 2
    config.model.update(context_steps=20, num_layers=1, d_model=16, d_ff=32)
    config.data.window_steps = 30
    config.train.update(
      num_steps=20, batch_size=8, warmup_steps=5, log_every=10, eval_every=10
    )
    config.train.checkpoint_every = 10
    config.ed.expert_episodes = 2
    config.data.num_validation_windows = 16
    config.evaluation.update(
      num_episodes=4, num_test_tasks=2, num_train_tasks=2, num_seeds=2
    )
  elif preset == 'paper':
    config.source.config.num_actors = 100
    config.source.config.num_updates = 500
    config.histories.num_tasks = 20
    config.histories.learners_per_shard = 4
    config.model.d_ff = 2048  # the paper's
    config.train.update(num_steps=100_000, batch_size=128)
  return config
