"""The Watermaze search source: sweeps the arena, then returns to where it
was paid, so its visits per episode rise within a few episodes."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from algdist import agents, envs
from algdist.agents import pose_search
from algdist.envs import watermaze


def test_sweep_points_cover_the_reachable_disk():
  params = watermaze.EnvParams()
  points = pose_search.sweep_points(0.25, params)
  reach = params.arena_radius - params.body_radius
  assert np.all(np.linalg.norm(points, axis=-1) <= reach)
  # Every reachable point lies within half a diagonal of a sweep point.
  rng = np.random.default_rng(0)
  r = reach * np.sqrt(rng.uniform(size=2000)) * 0.99
  a = rng.uniform(0, 2 * math.pi, 2000)
  probe = np.stack([r * np.cos(a), r * np.sin(a)], -1)
  gap = np.linalg.norm(probe[:, None] - points, axis=-1).min(1)
  assert gap.max() <= 0.25 / math.sqrt(2) * 1.2


def test_steer_moves_when_facing_and_turns_toward_the_target():
  target = jnp.array([1.0, 0.0])
  steer = lambda heading: int(
    pose_search.steer(jnp.zeros(2), jnp.float32(heading), target, 15.0)
  )
  assert steer(0.0) == 0  # forward
  assert steer(math.radians(30)) == 7  # forward + turn right
  assert steer(-math.radians(30)) == 6  # forward + turn left
  assert steer(math.radians(120)) == 5  # turn right
  assert steer(-math.radians(120)) == 4  # turn left


def test_bad_settings_and_other_envs_are_named():
  config, make_train = agents.get('pose_search', spacing=0.0)
  with pytest.raises(ValueError, match='spacing=0'):
    make_train(config, envs.make('watermaze')[0])
  config, make_train = agents.get('pose_search')
  with pytest.raises(ValueError, match='needs the watermaze env'):
    make_train(config, envs.make('dark_room')[0])


def test_finds_the_platform_within_a_few_episodes_then_returns_to_it():
  env, params = envs.make('watermaze', image_height=12, image_width=16)
  config, make_train = agents.get('pose_search', num_steps=600)
  tasks = env.tasks(params, 'test', num=8)
  keys = jax.random.split(jax.random.key(0), 8)
  memory, history = jax.jit(jax.vmap(make_train(config, env)))(keys, tasks)
  visits = np.asarray(history.reward).reshape(8, 12, 50).sum(-1)
  assert history.obs.shape == (8, 1, 600, 12, 16, 3)
  assert np.all(visits.sum(1) > 0)  # every platform found
  # The mean paid position lies on the platform: it was paid there.
  paid = np.asarray(memory.paid_sum / memory.paid_count[..., None])[:, 0]
  gap = np.linalg.norm(paid - np.asarray(tasks.platform), axis=-1)
  assert np.all(gap <= params.platform_radius)
  # Returns from every respawn: the last episodes visit far more often
  # than the first, which sweep.
  assert visits[:, 8:].mean() > 4.0
  assert visits[:, 8:].mean() > 2 * visits[:, :2].mean()


def test_planned_targets_keep_the_searchers_choice_where_a_slip_was_taken():
  env, params = envs.make('watermaze', image_height=12, image_width=16)
  config, make_train = agents.get(
    'pose_search', num_steps=200, epsilon=0.3, imitate='planned'
  )
  task = jax.tree.map(lambda x: x[0], env.tasks(params, 'train', num=1))
  _, history = jax.jit(make_train(config, env))(jax.random.key(0), task)
  slipped = np.asarray(history.action != history.target)
  # About epsilon x 7/8 of the steps took another action than planned.
  assert 0.15 < slipped.mean() < 0.4
  plain_config, make_plain = agents.get('pose_search', num_steps=200)
  _, plain = jax.jit(make_plain(plain_config, env))(jax.random.key(0), task)
  assert plain.target is None
