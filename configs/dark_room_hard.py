"""Dark Room Hard: a 17x17 grid whose unseen goal pays +1 once, then ends.

Commands (from the repository root):
  python -m algdist.main --config configs/dark_room_hard.py --mode generate
  python -m algdist.main --config configs/dark_room_hard.py:smoke \
      --workdir /tmp/drh
  python -m algdist.main --config configs/dark_room_hard.py:paper  # accel.

Presets: `smoke` (seconds; tests use it), default (a laptop CPU, minutes),
`paper` (the paper's scale: about 2,000 histories from A3C-style learners with
100 actors; for accelerators).

Expected (default, 2-core CPU): 1,024 PPO histories of 6,000 steps (300
episodes or more: a found goal ends its episode), in about half a minute
with compilation; 84% of them go from random (5% of optimal in the first
episode) to >= 90% of optimal over their last ten episodes. The reward is
sparse, and who learns is set by the goal's distance d from the start:
every learner with d <= 11 learned, 2 of 3 with d = 12, none of the 9 with
d >= 14 (14% of the training goals have d >= 13). A near-uniform early
policy almost never walks 14 steps straight out within a 20-step episode,
so those learners never see a reward and their histories stay at zero.
Tabular Q-learning with optimistic values did no
better (81% of 32 learners after 1,000 episodes): its optimism cannot reach
the far cells because the 20-step time limit counts as terminal and a table
of (x, y) cannot tell an episode's late steps from its early ones.
"""

import ml_collections


def get_config(preset: str | None = None) -> ml_collections.ConfigDict:
  """The Dark Room Hard experiment; `preset` is None, 'smoke' or 'paper'."""
  preset = preset or 'default'
  if preset not in ('smoke', 'default', 'paper'):
    raise ValueError(
      f"Unknown preset '{preset}' for dark_room_hard: use smoke, paper, or "
      'none.'
    )
  config = ml_collections.ConfigDict()
  config.preset = preset  # which preset this config came from

  config.env = ml_collections.ConfigDict()
  config.env.name = 'dark_room_hard'  # task family, see algdist.envs.names()
  # Fields of the family's EnvParams to override (e.g. num_test_tasks).
  config.env.overrides = ml_collections.ConfigDict()
  config.env.overrides.split_seed = 0  # fixes which 64 goals are held out

  # The source algorithm whose learning histories AD distils.
  config.source = ml_collections.ConfigDict()
  config.source.algorithm = 'ppo'  # see algdist.agents.names()
  # Overrides of that algorithm's default config (algdist/agents/*.py).
  config.source.config = ml_collections.ConfigDict()
  config.source.config.num_actors = 16  # actors (= streams) per learner
  # Updates of 20 steps: 6,000 steps, 300 episodes or more (a found goal
  # ends its episode early).
  config.source.config.num_updates = 300
  # Step size falls linearly to 0 (bool), as for Dark Room.
  config.source.config.anneal_learning_rate = True

  config.histories = ml_collections.ConfigDict()
  config.histories.num_tasks = 64  # training goals with learners (of 225)
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
    config.source.config.num_updates = 1000
    config.histories.num_tasks = 20
    config.histories.learners_per_shard = 4
  return config
