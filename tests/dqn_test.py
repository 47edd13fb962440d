"""DQN: it learns a small task, its history's layout, vmap and tracing."""

import dataclasses

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from algdist import agents, envs, rollout
from algdist.agents import base, dqn

# Dark Room 5x5 with the goal 2 cells above the centre: optimal return 19.
SMALL_TASK = dict(size=5, goal=jnp.array([2, 0], jnp.int32))
LEARN_CONFIG = dataclasses.replace(
  dqn.CONFIGS['dqn'],
  num_actors=4,
  num_steps=1000,
  train_every=1,
  buffer_size=4000,
  learning_starts=200,
  batch_size=32,
  learning_rate=1e-3,
  n_step=3,
  target_update_every=50,
  eps_decay_fraction=0.4,
  eps_end=0.02,
  hidden=(64,),
)
# A few updates only: enough to exercise every part, cheap to compile.
TINY_CONFIG = dataclasses.replace(
  dqn.CONFIGS['dqn'],
  num_actors=2,
  num_steps=12,
  train_every=2,
  buffer_size=12,
  learning_starts=4,
  batch_size=4,
  target_update_every=2,
  n_step=2,
  hidden=(16,),
)


def _index(tree, i):
  return jax.tree.map(lambda x: x[i], tree)


def _returns(history, num_episodes):
  """[..., A, T] history -> [..., A, num_episodes] episode returns."""
  fn = lambda h: rollout.stream_episode_returns(h, num_episodes)
  for _ in range(history.reward.ndim - 1):
    fn = jax.vmap(fn)
  return fn(history)


def test_registry_serves_dqn():
  config, make_train = agents.get('dqn', num_actors=3)
  assert config.num_actors == 3
  assert make_train is dqn.make_train


@pytest.mark.slow  # learning check
def test_learns_a_nearby_goal():
  env, params = envs.make('dark_room', **SMALL_TASK)
  optimal = float(env.optimal_return(params))
  train = dqn.make_train(LEARN_CONFIG, env)
  keys = jax.random.split(jax.random.key(0), 3)
  _, history = jax.jit(jax.vmap(train, in_axes=(0, None)))(keys, params)
  num_episodes = LEARN_CONFIG.num_steps // params.max_steps_in_episode
  returns = np.asarray(_returns(history, num_episodes)).mean((0, 1))
  first, last = returns[:5].mean(), returns[-10:].mean()
  assert first < 0.3 * optimal, returns
  assert last > 0.85 * optimal, returns


def test_watermaze_history_and_replay_keep_uint8_pixels():
  env, params = envs.make('watermaze')
  state, history = jax.jit(dqn.make_train(TINY_CONFIG, env))(
    jax.random.key(0), params
  )
  a, t = TINY_CONFIG.num_actors, TINY_CONFIG.num_steps
  chex.assert_shape(history.obs, (a, t, 72, 96, 3))
  chex.assert_type(history.obs, jnp.uint8)
  chex.assert_shape([history.action, history.reward], [(a, t)] * 2)
  chex.assert_type([history.action, history.reward], [jnp.int32, jnp.float32])
  assert history.episode_start[:, 0].all()
  slots = TINY_CONFIG.buffer_size // a
  chex.assert_shape(state.replay.obs, (slots, a, 72, 96, 3))
  chex.assert_type(state.replay.obs, jnp.uint8)
  # The buffer holds the last `slots` steps of the history, in ring order.
  np.testing.assert_array_equal(
    np.roll(np.asarray(state.replay.obs), -int(state.replay.ptr), 0),
    np.swapaxes(np.asarray(history.obs[:, -slots:]), 0, 1),
  )
  # 6 iterations of 2 steps; the first can not learn: n_step = 2 needs 3
  # stored steps per actor.
  assert int(state.num_updates) == 5


def test_replay_n_step_targets_stop_at_episode_ends():
  # 8 steps of one actor into 6 slots: steps 2..7 remain, oldest first.
  replay = dqn.Replay.empty(6, jnp.zeros((1, 1), jnp.int32))
  done = [False, False, False, True, False, False, False, False]
  for t in range(8):
    replay = replay.add(
      base.Step(
        obs=jnp.full((1, 1), t, jnp.int32),
        action=jnp.full((1,), t % 3, jnp.int32),
        reward=jnp.full((1,), 10.0**t, jnp.float32),
        episode_start=jnp.zeros((1,), bool),
        done=jnp.array([done[t]]),
        terminated=jnp.array([done[t]]),
        next_obs=jnp.zeros((1, 1), jnp.int32),
      )
    )
  obs, action, ret, bootstrap, next_obs = jax.jit(
    lambda key: replay.sample(key, 256, n_step=2, discount=0.5)
  )(jax.random.key(0))
  t = np.asarray(obs[:, 0])
  # Steps 2..5 have their 2 successors stored; 6 and 7 do not.
  assert set(t.tolist()) == {2, 3, 4, 5}
  np.testing.assert_array_equal(action, t % 3)
  np.testing.assert_array_equal(next_obs[:, 0], t + 2)
  # Step 2: r2 + 0.5 r3, and step 3 ends the episode: no bootstrap.
  # Step 3: r3 only. Steps 4, 5: two rewards, then 0.25 x the value.
  expected_ret = {
    2: 1e2 + 0.5e3,
    3: 1e3,
    4: 1e4 + 0.5e5,
    5: 1e5 + 0.5e6,
  }
  expected_boot = {2: 0.0, 3: 0.0, 4: 0.25, 5: 0.25}
  np.testing.assert_allclose(ret, [expected_ret[i] for i in t], rtol=1e-6)
  np.testing.assert_allclose(bootstrap, [expected_boot[i] for i in t])


@pytest.fixture(scope='module')
def batched_train():
  """A jitted, trace-counted `train` vmapped over (key, task) pairs."""
  env, params = envs.make('dark_room')
  train = dqn.make_train(TINY_CONFIG, env)
  chex.clear_trace_counter()
  batched = jax.jit(
    jax.vmap(chex.assert_max_traces(lambda k, p: train(k, p), n=1))
  )
  return env, params, train, batched


def test_vmap_over_tasks_equals_per_task_runs(batched_train):
  env, params, train, batched = batched_train
  tasks = env.tasks(params, 'train', num=3, seed=1)
  keys = jax.random.split(jax.random.key(2), 3)
  states, histories = batched(keys, tasks)
  single = jax.jit(train)
  for i in range(3):
    state, history = single(keys[i], _index(tasks, i))
    chex.assert_trees_all_equal(history, _index(histories, i))
    chex.assert_trees_all_close(
      state.params, _index(states.params, i), rtol=1e-5, atol=1e-6
    )


def test_traces_once_across_task_batches(batched_train):
  env, params, _, batched = batched_train
  keys = jax.random.split(jax.random.key(3), 3)
  for seed in range(2):
    tasks = env.tasks(params, 'train', num=3, seed=seed)
    jax.block_until_ready(batched(keys, tasks))


@pytest.mark.parametrize(
  'field, value',
  [
    ('num_steps', 13),
    ('buffer_size', 13),
    ('learning_starts', 100),
    ('target_tau', 0.0),
    ('patch_sizes', (4, 2)),
  ],
)
def test_impossible_config_is_named(field, value):
  env, _ = envs.make('dark_room')
  config = dataclasses.replace(TINY_CONFIG, **{field: value})
  with pytest.raises(ValueError, match=field):
    dqn.make_train(config, env)
