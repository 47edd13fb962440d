"""Dark Room, Dark Room Hard and Dark Key-to-Door: dynamics, tasks, optima."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from algdist import envs, rollout
from algdist.envs import base

GRID_ENVS = ['dark_room', 'dark_room_hard', 'dark_key_to_door']
NOOP, UP, DOWN, LEFT, RIGHT = range(5)


def _step(env, state, action, params, key=0):
  return env.step(jax.random.key(key), state, jnp.int32(action), params)


def _index(tree, i):
  return jax.tree.map(lambda x: x[i], tree)


def _num_tasks(tasks):
  return jax.tree.leaves(tasks)[0].shape[0]


def _oracle(env):
  return rollout.oracle_policy(env)


def _constant(action):
  return rollout.stateless_policy(lambda key, state, params: jnp.int32(action))


def _rollout(env, policy, key, params, num_steps):
  """`policy` acts `num_steps` steps in one scan (gymnax auto-resets)."""
  run = rollout.make_policy_rollout(env, policy, num_steps, record=True)
  return run(key, None, params)


@pytest.mark.parametrize('name', GRID_ENVS)
def test_shapes_and_dtypes(name):
  env, params = envs.make(name)
  obs, state = env.reset(jax.random.key(0), params)
  chex.assert_shape(obs, (2,))
  chex.assert_type(obs, jnp.int32)
  obs, state, reward, terminated, truncated, info = _step(env, state, 1, params)
  chex.assert_shape(obs, (2,))
  chex.assert_type([reward, terminated, truncated], [float, bool, bool])
  assert env.num_actions == 5
  assert env.observation_space(params).contains(obs)


@pytest.mark.parametrize('name', GRID_ENVS)
def test_step_traces_once_across_tasks(name):
  env, params = envs.make(name)
  tasks = env.tasks(params, 'train', num=4)
  chex.clear_trace_counter()

  @jax.jit
  @chex.assert_max_traces(n=1)
  def step(key, state, action, task):
    return env.step(key, state, action, task)

  _, state = env.reset(jax.random.key(0), params)
  for i in range(4):
    task = _index(tasks, i)
    step(jax.random.key(i), state, jnp.int32(i % 5), task)


@pytest.mark.parametrize('name', GRID_ENVS)
def test_vmap_over_tasks_equals_loop(name):
  env, params = envs.make(name)
  tasks = env.tasks(params, 'train', num=6, seed=3)
  keys = jax.random.split(jax.random.key(1), 6)
  policy = rollout.random_policy(5)
  run = lambda k, p: _rollout(env, policy, k, p, 60)
  batched = jax.jit(jax.vmap(run))(keys, tasks)
  for i in range(6):
    task = _index(tasks, i)
    single = jax.jit(run)(keys[i], task)
    chex.assert_trees_all_equal(single, _index(batched, i))


def test_dark_room_walls_and_moves():
  env, params = envs.make('dark_room', goal=jnp.array([0, 0]))
  _, state = env.reset(jax.random.key(0), params)
  np.testing.assert_array_equal(state.pos, [4, 4])
  expected = {
    NOOP: [4, 4],
    UP: [4, 3],
    DOWN: [4, 5],
    LEFT: [3, 4],
    RIGHT: [5, 4],
  }
  for action, pos in expected.items():
    obs, *_ = _step(env, state, action, params)
    np.testing.assert_array_equal(obs, pos)
  # Walk into the right wall: stays on the last column.
  for _ in range(7):
    obs, state, *_ = _step(env, state, RIGHT, params)
  np.testing.assert_array_equal(obs, [8, 4])


def test_dark_room_pays_every_step_on_goal_and_truncates():
  env, params = envs.make('dark_room', goal=jnp.array([5, 4]))
  _, state = env.reset(jax.random.key(0), params)
  rewards, truncs, terms = [], [], []
  for t in range(20):
    obs, state, reward, term, trunc, _ = _step(
      env, state, RIGHT if t == 0 else NOOP, params
    )
    rewards.append(float(reward))
    truncs.append(bool(trunc))
    terms.append(bool(term))
  assert rewards == [1.0] * 20
  assert truncs == [False] * 19 + [True]
  assert not any(terms)
  # Auto-reset: back at the centre with a fresh clock.
  np.testing.assert_array_equal(obs, [4, 4])
  assert int(state.time) == 0


def test_dark_room_hard_pays_once_and_terminates():
  env, params = envs.make('dark_room_hard', goal=jnp.array([10, 8]))
  _, state = env.reset(jax.random.key(0), params)
  np.testing.assert_array_equal(state.pos, [8, 8])
  _, state, reward, term, trunc, _ = _step(env, state, RIGHT, params)
  assert float(reward) == 0.0 and not bool(term)
  obs, state, reward, term, trunc, _ = _step(env, state, RIGHT, params)
  assert float(reward) == 1.0 and bool(term) and not bool(trunc)
  np.testing.assert_array_equal(obs, [8, 8])  # auto-reset to the centre
  # Never reaching the goal: truncated after 20 steps, zero reward.
  traj = _rollout(env, _constant(NOOP), jax.random.key(0), params, 20)
  assert float(traj.reward.sum()) == 0.0
  assert bool(traj.truncated[-1]) and not bool(traj.terminated.any())


def test_key_to_door_needs_key_before_door():
  env, params = envs.make(
    'dark_key_to_door', key_pos=jnp.array([2, 0]), door_pos=jnp.array([1, 0])
  )
  state = env.reset(jax.random.key(0), params)[1].replace(
    pos=jnp.array([0, 0], jnp.int32)
  )
  # Through the door without the key: nothing happens.
  _, state, reward, term, *_ = _step(env, state, RIGHT, params)
  assert float(reward) == 0.0 and not bool(term)
  _, state, reward, term, *_ = _step(env, state, RIGHT, params)
  assert float(reward) == 1.0 and bool(state.has_key) and not bool(term)
  # Standing on the key again pays nothing more.
  _, state, reward, *_ = _step(env, state, NOOP, params)
  assert float(reward) == 0.0
  obs, state, reward, term, trunc, _ = _step(env, state, LEFT, params)
  assert float(reward) == 1.0 and bool(term) and not bool(trunc)
  assert not bool(state.has_key) and int(state.time) == 0  # auto-reset


def test_key_to_door_start_is_random_and_never_the_key():
  env, params = envs.make(
    'dark_key_to_door', key_pos=jnp.array([3, 5]), door_pos=jnp.array([1, 1])
  )
  keys = jax.random.split(jax.random.key(0), 4000)
  starts = jax.vmap(lambda k: env.reset(k, params)[0])(keys)
  assert not np.any(np.all(np.asarray(starts) == [3, 5], -1))
  assert len({tuple(s) for s in np.asarray(starts)}) == 80


def test_key_to_door_truncates_after_50_steps():
  env, params = envs.make('dark_key_to_door')
  traj = _rollout(env, _constant(NOOP), jax.random.key(2), params, 100)
  truncated = np.flatnonzero(np.asarray(traj.truncated))
  np.testing.assert_array_equal(truncated, [49, 99])


@pytest.mark.parametrize('name', GRID_ENVS)
def test_oracle_earns_exactly_the_optimal_return(name):
  env, params = envs.make(name)
  horizon = params.max_steps_in_episode
  for split in base.SPLITS:
    tasks = env.tasks(params, split, num=None if name == 'dark_room' else 64)
    keys = jax.random.split(jax.random.key(0), _num_tasks(tasks))

    def episode_return(key, task):
      traj = _rollout(env, _oracle(env), key, task, horizon)
      done = traj.terminated | traj.truncated
      first_episode = jnp.cumsum(done) - done == 0
      return (traj.reward * first_episode).sum()

    returns = jax.jit(jax.vmap(episode_return))(keys, tasks)
    np.testing.assert_allclose(returns, env.optimal_return(tasks))


def test_dark_room_optimal_returns_match_paper():
  env, params = envs.make('dark_room')
  goals = np.stack(np.meshgrid(range(9), range(9)), -1).reshape(-1, 2)
  optimal = env.optimal_return(params.replace(goal=jnp.asarray(goals)))
  assert float(optimal.min()) == 13.0 and float(optimal.max()) == 20.0
  np.testing.assert_allclose(float(optimal.mean()), 16.54, atol=0.005)
  hard_env, hard = envs.make('dark_room_hard')
  np.testing.assert_array_equal(
    hard_env.optimal_return(hard_env.tasks(hard, 'test')), 1.0
  )


@pytest.mark.parametrize('name', GRID_ENVS)
def test_task_splits_are_disjoint_and_fixed_by_seed(name):
  env, params = envs.make(name)
  cells = lambda t: {
    tuple(np.asarray(x).ravel())
    for x in zip(*[np.asarray(v) for v in jax.tree.leaves(t)], strict=True)
  }
  train = cells(env.tasks(params, 'train'))
  test = cells(env.tasks(params, 'test'))
  assert not train & test
  assert len(test) == params.num_test_tasks >= 10
  n = params.size**2
  assert len(train) + len(test) == (n if 'room' in name else n * (n - 1))
  assert cells(env.tasks(params, 'test')) == test
  other = cells(env.tasks(params.replace(split_seed=1), 'test'))
  assert other != test
  # Sampling stays inside the split, is seeded and covers it evenly.
  sample = env.tasks(params, 'train', num=3 * len(train), seed=5)
  assert cells(sample) == train
  chex.assert_trees_all_equal(
    sample, env.tasks(params, 'train', num=3 * len(train), seed=5)
  )
