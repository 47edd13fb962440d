"""Tabular Q-learning: learns Dark Room; batching; which envs it refuses."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from algdist import agents, envs, rollout

NUM_TASKS, NUM_LEARNERS = 4, 2
NUM_STEPS = 3000  # 150 Dark Room episodes


def _index(tree, *i):
  return jax.tree.map(lambda x: x[i], tree)


@pytest.fixture(scope='module')
def dark_room():
  """Tasks x learners Q-learning runs on sampled Dark Room training goals."""
  env, params = envs.make('dark_room')
  config, make_train = agents.get('q_learning', num_steps=NUM_STEPS)
  train = make_train(config, env)
  tasks = env.tasks(params, 'train', num=NUM_TASKS, seed=3)
  keys = jax.random.split(jax.random.key(0), (NUM_TASKS, NUM_LEARNERS))
  broadcast = jax.tree.map(
    lambda x: jnp.repeat(x[:, None], NUM_LEARNERS, 1), tasks
  )
  state, history = jax.jit(jax.vmap(jax.vmap(train)))(keys, broadcast)
  num_episodes = NUM_STEPS // params.max_steps_in_episode
  stream_returns = lambda h: rollout.stream_episode_returns(h, num_episodes)
  first_stream = jax.tree.map(lambda x: x[:, :, 0], history)
  returns = jax.vmap(jax.vmap(stream_returns))(first_stream)
  return dict(
    env=env,
    train=train,
    tasks=tasks,
    keys=keys,
    state=state,
    history=history,
    returns=np.asarray(returns),  # [N, L, episodes]
    optimal=np.asarray(env.optimal_return(tasks))[:, None],  # [N, 1]
  )


@pytest.mark.slow  # learning check
def test_learns_dark_room_from_random_to_optimal(dark_room):
  returns, optimal = dark_room['returns'], dark_room['optimal']
  first = returns[..., :5].mean(-1) / optimal
  last = returns[..., -5:].mean(-1) / optimal
  # Epsilon starts at 1: the first episodes are a random walk.
  assert np.all(first < 0.1), first
  assert np.all(last >= 0.9), last
  np.testing.assert_array_equal(dark_room['state'].epsilon, 0.0)


def test_history_shapes_and_episodes(dark_room):
  history = dark_room['history']
  shape = (NUM_TASKS, NUM_LEARNERS, 1, NUM_STEPS)
  chex.assert_shape(history.obs, (*shape, 2))
  chex.assert_type(
    [history.obs, history.action, history.reward, history.episode_start],
    [jnp.int32, jnp.int32, jnp.float32, bool],
  )
  # Dark Room episodes are 20 steps: one start every 20.
  starts = np.zeros(NUM_STEPS, bool)
  starts[::20] = True
  np.testing.assert_array_equal(
    history.episode_start, np.broadcast_to(starts, shape)
  )
  # Every episode starts at the centre cell.
  np.testing.assert_array_equal(history.obs[..., ::20, :], 4)
  chex.assert_shape(dark_room['state'].q, (NUM_TASKS, NUM_LEARNERS, 81, 5))


def test_tasks_by_learners_equal_per_task_runs(dark_room):
  single = jax.jit(dark_room['train'])
  batched = (dark_room['state'], dark_room['history'])
  for i, j in [(0, 0), (0, 1), (3, 1)]:
    task = _index(dark_room['tasks'], i)
    chex.assert_trees_all_close(
      single(dark_room['keys'][i, j], task), _index(batched, i, j)
    )
  actions = dark_room['history'].action
  assert not np.array_equal(actions[:, 0], actions[:, 1])


def test_actors_update_one_table_in_order():
  env, params = envs.make('dark_room', goal=jnp.array([5, 4]))
  config, make_train = agents.get(
    'q_learning', num_actors=3, num_steps=40, initial_value=0.0
  )
  state, history = jax.jit(make_train(config, env))(jax.random.key(1), params)
  chex.assert_shape(history.action, (3, 40))
  # Replays the three streams' transitions, step by step, actor by actor.
  q = np.zeros((81, 5), np.float32)
  row = lambda obs: obs[0] * 9 + obs[1]
  obs = np.asarray(history.obs)
  for t in range(40):
    for a in range(3):
      done = t % 20 == 19
      next_obs = obs[a, t + 1] if t + 1 < 40 else obs[a, t]
      target = history.reward[a, t] + (
        0.0 if done else config.discount * q[row(next_obs)].max()
      )
      s, act = row(obs[a, t]), history.action[a, t]
      q[s, act] += config.learning_rate * (target - q[s, act])
  # The last step's next observation is unknown here: skip its rows.
  last = {(row(obs[a, -1]), int(history.action[a, -1])) for a in range(3)}
  mask = np.ones_like(q, bool)
  for s, act in last:
    mask[s, act] = False
  np.testing.assert_allclose(np.asarray(state.q)[mask], q[mask], rtol=1e-6)
  assert float(history.reward.sum()) > 0  # the goal is next to the start


def test_refuses_pixel_observations():
  env, _ = envs.make('watermaze')
  config, make_train = agents.get('q_learning')
  with pytest.raises(ValueError, match='small integer vectors'):
    make_train(config, env)


def test_refuses_impossible_config():
  env, _ = envs.make('dark_room')
  config, make_train = agents.get('q_learning', epsilon_decay_fraction=0.0)
  with pytest.raises(ValueError, match='epsilon_decay_fraction=0.0'):
    make_train(config, env)


def test_bootstrap_truncated_changes_only_the_time_limit_target():
  """One 20-step Dark Room episode under a random policy: the two settings
  act alike and differ only in the value of the last step's action, which
  bootstraps from the next episode's first cell instead of ending at its
  reward."""
  env, params = envs.make('dark_room')
  task = env.tasks(params, 'train', num=1, seed=5)
  task = jax.tree.map(lambda x: x[0], task)
  runs = {}
  for bootstrap in (False, True):
    config, make_train = agents.get(
      'q_learning',
      num_steps=20,
      learning_rate=1.0,
      discount=0.9,
      epsilon_start=1.0,
      epsilon_end=1.0,
      bootstrap_truncated=bootstrap,
    )
    runs[bootstrap] = jax.jit(make_train(config, env))(jax.random.key(1), task)
  (q_end, h_end), (q_boot, h_boot) = runs[False], runs[True]
  chex.assert_trees_all_equal(h_end, h_boot)  # epsilon 1: the same actions
  row = lambda obs: int(obs[0]) * 9 + int(obs[1])
  last = (row(h_end.obs[0, -1]), int(h_end.action[0, -1]))
  reward = float(h_end.reward[0, -1])
  differs = np.argwhere(np.asarray(q_end.q) != np.asarray(q_boot.q))
  assert [tuple(i) for i in differs] == [last]
  assert float(q_end.q[last]) == reward  # truncation ended the target
  # Optimistic initial values (1) of the first cell flow into the target.
  assert float(q_boot.q[last]) > reward


def test_observe_episode_return_gives_rows_after_the_key_their_own_values():
  """Dark Key-to-Door under a random policy: with the option the table has
  a second block of rows, for steps after the episode's first reward (the
  key), and only steps after a reward update it."""
  env, params = envs.make('dark_key_to_door')
  task = env.tasks(params, 'train', num=1, seed=2)
  task = jax.tree.map(lambda x: x[0], task)
  settings = dict(
    num_steps=2000, epsilon_start=1.0, epsilon_end=1.0, initial_value=0.0
  )
  config, make_train = agents.get(
    'q_learning', observe_episode_return=True, **settings
  )
  state, history = jax.jit(make_train(config, env))(jax.random.key(0), task)
  cells = params.size**2
  assert state.q.shape == (2 * cells, 5)
  # Which steps came after a reward in their episode.
  reward = np.asarray(history.reward[0])
  start = np.asarray(history.episode_start[0])
  paid, after = 0.0, []
  for r, s in zip(reward, start, strict=True):
    paid = 0.0 if s else paid
    after.append(paid > 0)
    paid += r
  after = np.asarray(after)
  assert after.any() and not after.all()
  # Zero-initialised values change only where a target was non-zero; the
  # second block's rows are the cells visited after a reward.
  obs = np.asarray(history.obs[0])
  visited_after = {int(x) * params.size + int(y) for x, y in obs[after]}
  changed = np.flatnonzero(np.any(np.asarray(state.q)[cells:] != 0, -1))
  assert set(changed.tolist()) <= visited_after
  assert changed.size > 0
  without, make_train = agents.get('q_learning', **settings)
  plain, _ = jax.jit(make_train(without, env))(jax.random.key(0), task)
  assert plain.q.shape == (cells, 5)
