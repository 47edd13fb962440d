"""Dyna-Q on Watermaze: sweeps the arena by its learned model, then plans
its way back to where it was paid, so its visits per episode rise within a
few episodes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from algdist import agents, envs
from algdist.agents import dyna_q
from algdist.envs import watermaze

NUM_TASKS, NUM_STEPS = 8, 800  # 16 episodes of 50 steps


def test_prior_moves_leave_the_cell_and_turns_change_the_heading_bin():
  config, params = dyna_q.Config(), watermaze.EnvParams()
  prior = np.asarray(dyna_q.prior_next_state(config, params))
  h = config.heading_bins
  n = dyna_q.lattice_size(config, params)
  states = np.arange(n * n * h)
  cell, heading = states // h, states % h
  # Away from the wall, every move leaves the cell and keeps the heading.
  centre = -1 + (np.stack([cell % n, cell // n], -1) + 0.5) * config.cell
  inner = np.linalg.norm(centre, axis=-1) < 0.8
  for action in (0, 1, 2, 3):
    assert np.all(prior[inner, action] // h != cell[inner])
    np.testing.assert_array_equal(prior[:, action] % h, heading)
  # Turns stay in the cell and step the heading bin by one.
  turned = cell * h + (heading + np.array([[1], [-1]])) % h
  np.testing.assert_array_equal(prior[inner, 4], turned[0, inner])
  np.testing.assert_array_equal(prior[inner, 5], turned[1, inner])


def test_bad_settings_and_other_envs_are_named():
  env = envs.make('watermaze')[0]
  for field, value in [
    ('cell', 0.0),
    ('discount', 1.0),
    ('optimism', -0.1),
    ('planning_sweeps', -1),
    ('heading_bins', 0),
    ('epsilon', 2.0),
  ]:
    config, make_train = agents.get('dyna_q', **{field: value})
    with pytest.raises(ValueError, match=f'{field}={value}'):
      make_train(config, env)
  config, make_train = agents.get('dyna_q')
  with pytest.raises(ValueError, match='needs the watermaze env'):
    make_train(config, envs.make('dark_room')[0])


@pytest.fixture(scope='module')
def run():
  env, params = envs.make('watermaze', image_height=12, image_width=16)
  config, make_train = agents.get('dyna_q', num_steps=NUM_STEPS)
  tasks = env.tasks(params, 'test', num=NUM_TASKS)
  keys = jax.random.split(jax.random.key(0), NUM_TASKS)
  model, history = jax.jit(jax.vmap(make_train(config, env)))(keys, tasks)
  return dict(
    config=config, params=params, tasks=tasks, model=model, history=history
  )


def test_history_shapes(run):
  history = run['history']
  assert history.obs.shape == (NUM_TASKS, 1, NUM_STEPS, 12, 16, 3)
  assert history.action.dtype == jnp.int32
  starts = np.zeros(NUM_STEPS, bool)
  starts[::50] = True
  np.testing.assert_array_equal(
    history.episode_start[:, 0], np.broadcast_to(starts, (NUM_TASKS, NUM_STEPS))
  )


def test_finds_every_platform_then_returns_to_it(run):
  visits = np.asarray(run['history'].reward).reshape(NUM_TASKS, 16, 50)
  visits = visits.sum(-1)
  assert np.all(visits.sum(1) > 0), visits  # every platform found
  first, last = visits[:, :4].mean(), visits[:, -4:].mean()
  # Returns from every respawn: the last episodes visit far more often than
  # the first, which sweep.
  assert last > 4.5, visits.mean(0)
  assert last > 2 * first, visits.mean(0)


def test_the_cell_that_pays_most_is_on_the_platform(run):
  config, params, model = run['config'], run['params'], run['model']
  pay = np.asarray(model.pays / np.maximum(model.arrivals, 1.0))[:, 0]
  n = dyna_q.lattice_size(config, params)
  best = pay.argmax(-1)
  centre = -1 + (np.stack([best % n, best // n], -1) + 0.5) * config.cell
  gap = np.linalg.norm(centre - np.asarray(run['tasks'].platform), axis=-1)
  assert np.all(gap <= params.platform_radius + config.cell), gap


def test_forward_tie_breaking_walks_on_where_every_action_is_worth_the_same():
  env, params = envs.make('watermaze', image_height=12, image_width=16)
  task = jax.tree.map(lambda x: x[0], env.tasks(params, 'test', num=1))
  actions = {}
  for tie_break in dyna_q.TIE_BREAKS:
    config, make_train = agents.get(
      'dyna_q', num_steps=30, num_actors=4, tie_break=tie_break
    )
    _, history = jax.jit(make_train(config, env))(jax.random.key(0), task)
    actions[tie_break] = np.asarray(history.action)
  # An empty model values every move alike (optimism): 'forward' walks on,
  # 'random' picks any of them.
  assert (actions['forward'][:, :3] == 0).all()
  assert (actions['random'][:, :3] != 0).any()
  config, make_train = agents.get('dyna_q', tie_break='left')
  with pytest.raises(ValueError, match="tie_break='left'"):
    make_train(config, env)
