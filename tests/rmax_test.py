"""R-max on Watermaze: sweeps the places it has not been to, then heads back
to the one that paid, so its visits per episode rise within a few
episodes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from algdist import agents, envs
from algdist.agents import pose_search, rmax
from algdist.envs import watermaze

NUM_TASKS, NUM_STEPS = 8, 800  # 16 episodes of 50 steps


def _model(points, **fields):
  p = points.shape[0]
  model = rmax.Model(
    arrivals=jnp.zeros(p), pays=jnp.zeros(p), paid_sum=jnp.zeros((p, 2))
  )
  return model.replace(**fields)


def test_the_nearest_unknown_place_is_worth_most_until_a_place_pays():
  config, params = rmax.Config(), watermaze.EnvParams()
  points = jnp.asarray(pose_search.sweep_points(config.spacing, params))
  pos = jnp.array([0.3, -0.2])
  value, spot = rmax.place_values(
    _model(points), pos, points, config, params.step_size
  )
  distance = np.linalg.norm(np.asarray(points - pos), axis=-1)
  assert int(np.argmax(value)) == int(np.argmin(distance))
  np.testing.assert_array_equal(spot, points)
  # The nearest place tried without pay is worth nothing; the next nearest
  # unknown one is worth most.
  near = int(np.argmin(distance))
  tried = _model(points, arrivals=jnp.zeros(len(points)).at[near].set(3.0))
  value, _ = rmax.place_values(tried, pos, points, config, params.step_size)
  assert value[near] == 0
  assert int(np.argmax(value)) == int(np.argsort(distance)[1])
  # A place far away that paid one step in two beats every unknown one, and
  # the agent heads for where it was paid, not for the place's point.
  far = int(np.argmax(distance))
  paid_at = points[far] + jnp.array([0.05, 0.0])
  paid = tried.replace(
    arrivals=tried.arrivals.at[far].set(2.0),
    pays=tried.pays.at[far].set(1.0),
    paid_sum=tried.paid_sum.at[far].set(paid_at),
  )
  value, spot = rmax.place_values(paid, pos, points, config, params.step_size)
  assert int(np.argmax(value)) == far
  np.testing.assert_allclose(spot[far], paid_at)


def test_learn_counts_steps_and_pay_and_forgets_misses_once_all_are_tried():
  params = watermaze.EnvParams()
  points = jnp.asarray(pose_search.sweep_points(0.25, params))
  model = rmax.learn(_model(points), points[2], jnp.float32(1.0), points)
  assert model.arrivals[2] == 1 and model.pays[2] == 1
  np.testing.assert_allclose(model.paid_sum[2], points[2])
  # Every place tried, none paid: only the last one stays known.
  missed = _model(points, arrivals=jnp.ones(len(points)).at[5].set(0.0))
  model = rmax.learn(missed, points[5], jnp.float32(0.0), points)
  np.testing.assert_array_equal(
    model.arrivals, np.eye(len(points), dtype=np.float32)[5]
  )


def test_bad_settings_and_other_envs_are_named():
  env = envs.make('watermaze')[0]
  for field, value in [
    ('spacing', 0.0),
    ('discount', 1.0),
    ('optimism', 0.0),
    ('aim', 90.0),
    ('epsilon', 2.0),
    ('num_actors', 0),
  ]:
    config, make_train = agents.get('rmax', **{field: value})
    with pytest.raises(ValueError, match=f'{field}={value}'):
      make_train(config, env)
  config, make_train = agents.get('rmax')
  with pytest.raises(ValueError, match='needs the watermaze env'):
    make_train(config, envs.make('dark_room')[0])


@pytest.fixture(scope='module')
def run():
  env, params = envs.make('watermaze', image_height=12, image_width=16)
  config, make_train = agents.get(
    'rmax', num_steps=NUM_STEPS, num_actors=2, epsilon=0.2, imitate='planned'
  )
  tasks = env.tasks(params, 'test', num=NUM_TASKS)
  keys = jax.random.split(jax.random.key(0), NUM_TASKS)
  model, history = jax.jit(jax.vmap(make_train(config, env)))(keys, tasks)
  return dict(params=params, tasks=tasks, model=model, history=history)


def test_history_shapes_and_targets(run):
  history = run['history']
  assert history.obs.shape == (NUM_TASKS, 2, NUM_STEPS, 12, 16, 3)
  assert history.action.dtype == history.target.dtype == jnp.int32
  # Slips: about one step in five takes another action than the planned one
  # (a uniform slip picks the planned one an eighth of the time).
  differ = np.mean(np.asarray(history.action != history.target))
  assert 0.12 < differ < 0.22, differ


def test_finds_every_platform_then_returns_to_it(run):
  visits = np.asarray(run['history'].reward).reshape(NUM_TASKS * 2, 16, 50)
  visits = visits.sum(-1)
  assert np.all(visits.sum(1) > 0), visits  # every platform found
  # The first episode sweeps; the last four return from every respawn.
  first, last = visits[:, 0].mean(), visits[:, -4:].mean()
  assert last > 3.5, visits.mean(0)
  assert last > 3 * first, visits.mean(0)


def test_where_it_heads_back_to_is_on_the_platform(run):
  model, params = run['model'], run['params']
  best = np.asarray(model.pays / np.maximum(model.arrivals, 1.0)).argmax(-1)
  paid_sum = np.take_along_axis(
    np.asarray(model.paid_sum), best[..., None, None], -2
  )[..., 0, :]
  pays = np.take_along_axis(np.asarray(model.pays), best[..., None], -1)
  spot = paid_sum / pays
  platform = np.asarray(run['tasks'].platform)[:, None]
  gap = np.linalg.norm(spot - platform, axis=-1)
  assert np.all(gap <= params.platform_radius), gap
