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
  'dmlab_watermaze',
)
# Shorter runs and smaller networks than the presets' (same algorithm and
# exploration settings otherwise): the check is about the first steps,
# before any reward tells tasks apart, and small is quick to compile.
SHORT = {
  'num_steps': 2000,
  'num_updates': 6,
  'hidden': (16,),
  'num_epochs': 1,
  'num_minibatches': 1,
}


def _acts_on_the_task_before_a_reward(config, algorithm, settings) -> bool:
  """Whether a learner run with one key on two tasks acts differently
  before any of its streams observes a difference (a reward, or a cell
  where a family's start depends on the task)."""
  env, params = envs.make(config.env.name, **config.env.overrides.to_dict())
  algorithm_config, make_train = agents.get(algorithm, **settings)
  train = jax.jit(make_train(algorithm_config, env))
  tasks = env.tasks(params, 'train', num=8, seed=1)
  key = jax.random.key(3)  # one key: only the task differs
  _, history = jax.vmap(train, (None, 0))(key, tasks)
  # Two tasks whose first observations agree (where a family's start cell
  # depends on the task, e.g. never the key's cell, not every pair does).
  first = np.asarray(history.obs)[:, :, 0].reshape(8, -1)  # [N, H, T, *O]
  same = [i for i in range(1, 8) if np.array_equal(first[0], first[i])]
  assert same, 'no two tasks start alike'
  runs = [jax.tree.map(lambda x, i=i: x[i], history) for i in (0, same[0])]
  flat = lambda x: np.asarray(x).reshape(-1, x.shape[-1])  # [H, T]
  reward = [flat(h.reward) for h in runs]
  action = [flat(h.action) for h in runs]
  obs = [np.asarray(h.obs).reshape(*reward[0].shape, -1) for h in runs]
  assert not np.array_equal(reward[0], reward[1]), 'the tasks never differed'
  # A learner pools its actor streams: the first step at which any stream
  # observes something different ends the identical prefix of all of them.
  # An action is chosen on its step's observation, before its reward.
  seen = np.any(obs[0] != obs[1], axis=(0, 2))  # [T]
  paid = np.any(reward[0] != reward[1], axis=0)  # [T]
  ends = np.flatnonzero(seen | np.concatenate([[False], paid[:-1]]))
  until = ends[0] if ends.size else reward[0].shape[1]
  assert until > 0, 'the tasks differ in their first observation'
  return not np.array_equal(action[0][:, :until], action[1][:, :until])


@pytest.mark.parametrize('family', FAMILIES)
def test_default_source_acts_the_same_on_two_tasks_until_a_reward_differs(
  family,
):
  config = importlib.import_module(f'configs.{family}').get_config()
  algorithm = config.source.algorithm
  assert algorithm not in ('noise_distillation', 'coverage', 'pose_search'), (
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
