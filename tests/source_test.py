"""Every default preset's source is an RL learner: it starts knowing nothing
of the task (issue 18's task-independence check)."""

import importlib

import jax
import numpy as np
import pytest

from algdist import agents, envs

# The families whose default preset distils an RL learner.
FAMILIES = (
  'dark_room',
  'dark_room_hard',
  'dark_key_to_door',
  'adversarial_bandit',
)
# Shorter runs and smaller networks than the presets' (same algorithm and
# exploration settings otherwise): the check is about the first steps,
# before any reward tells tasks apart, and small is quick to compile.
SHORT = {
  'num_steps': 600,
  'num_updates': 6,
  'hidden': (16,),
  'num_epochs': 1,
  'num_minibatches': 1,
}


def _acts_on_the_task_before_a_reward(config, algorithm, settings) -> bool:
  """Whether a learner run with one key on two tasks acts differently
  before any of its streams earns a different reward."""
  env, params = envs.make(config.env.name, **config.env.overrides.to_dict())
  algorithm_config, make_train = agents.get(algorithm, **settings)
  train = jax.jit(make_train(algorithm_config, env))
  tasks = env.tasks(params, 'train', num=2, seed=1)
  key = jax.random.key(3)  # one key: only the task differs
  runs = [
    train(key, jax.tree.map(lambda x, i=i: x[i], tasks))[1] for i in (0, 1)
  ]
  flat = lambda x: np.asarray(x).reshape(-1, x.shape[-1])  # [H, T]
  reward = [flat(h.reward) for h in runs]
  action = [flat(h.action) for h in runs]
  assert not np.array_equal(reward[0], reward[1]), 'the tasks never differed'
  # A learner pools its actor streams, so the first step at which any
  # stream's reward differs ends the identical prefix of all of them (the
  # action at that step was chosen before the reward).
  differs = np.flatnonzero(np.any(reward[0] != reward[1], axis=0))
  until = differs[0] + 1
  return not np.array_equal(action[0][:, :until], action[1][:, :until])


@pytest.mark.parametrize('family', FAMILIES)
def test_default_source_acts_the_same_on_two_tasks_until_a_reward_differs(
  family,
):
  config = importlib.import_module(f'configs.{family}').get_config()
  algorithm = config.source.algorithm
  assert algorithm not in ('noise_distillation', 'coverage'), (
    f'{family}: the default preset must distil an RL learner, not {algorithm}'
  )
  settings = config.source.config.to_dict()
  settings.update({k: v for k, v in SHORT.items() if k in settings})
  assert not _acts_on_the_task_before_a_reward(config, algorithm, settings)


def test_the_check_catches_a_source_that_knows_the_task():
  # A noisy demonstrator heads for the goal from its first step.
  config = importlib.import_module('configs.dark_room').get_config('ad_epsilon')
  settings = config.source.config.to_dict()
  assert _acts_on_the_task_before_a_reward(
    config, 'noise_distillation', settings
  )
