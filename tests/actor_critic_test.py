"""PPO and A2C: they learn Dark Room; history layout, vmap, tracing, errors."""

import dataclasses

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from algdist import agents, envs, rollout
from algdist.agents import actor_critic
from algdist.envs.dark_room import MOVES

NUM_TASKS = 4
# PPO as configs/dark_room.py runs it (16 actors, 100 episodes, annealed
# step size); A2C at its default (16 actors, 200 episodes).
LEARN = {
  'ppo': dict(anneal_learning_rate=True),
  'a2c': dict(),
}
# A few updates only: enough to exercise every part, cheap to compile.
TINY = dict(num_actors=2, num_updates=3, hidden=(16,))


def _index(tree, i):
  return jax.tree.map(lambda x: x[i], tree)


@pytest.fixture(scope='module', params=sorted(LEARN))
def learned(request):
  """Per-stream episode returns [N, H, E] of learners on sampled goals."""
  name = request.param
  env, params = envs.make('dark_room')
  config, make_train = agents.get(name, **LEARN[name])
  tasks = env.tasks(params, 'train', num=NUM_TASKS, seed=5)
  keys = jax.random.split(jax.random.key(1), NUM_TASKS)
  _, history = jax.jit(jax.vmap(make_train(config, env)))(keys, tasks)
  num_episodes = config.steps_per_stream // params.max_steps_in_episode
  returns = jax.vmap(
    jax.vmap(lambda h: rollout.stream_episode_returns(h, num_episodes))
  )
  return dict(
    name=name,
    returns=np.asarray(returns(history)),
    optimal=np.asarray(env.optimal_return(tasks)),
  )


@pytest.mark.slow  # learning check
def test_learns_dark_room_goals_from_random_to_optimal(learned):
  fraction = learned['returns'] / learned['optimal'][:, None, None]
  first = fraction[..., 0].mean(-1)  # per goal, over its actors
  last = fraction[..., -10:].mean((-2, -1))
  # A near-uniform initial policy rarely walks onto the goal...
  assert np.all(first < 0.1), (learned['name'], first)
  # ...and every goal's learner ends near its optimum.
  assert np.all(last >= 0.9), (learned['name'], last)


@pytest.fixture(scope='module')
def tiny():
  """PPO with few updates: `train`, jitted, and jitted under a trace counter."""
  env, params = envs.make('dark_room')
  config, make_train = agents.get('ppo', **TINY)
  train = make_train(config, env)
  chex.clear_trace_counter()
  batched = jax.jit(
    jax.vmap(chex.assert_max_traces(lambda k, p: train(k, p), n=1))
  )
  return dict(
    env=env,
    params=params,
    config=config,
    make_train=make_train,
    single=jax.jit(train),
    batched=batched,
  )


def test_history_layout(tiny):
  config, params = tiny['config'], tiny['params']
  _, history = tiny['single'](jax.random.key(0), params)
  shape = (config.num_actors, config.steps_per_stream)
  chex.assert_shape(history.obs, (*shape, 2))
  chex.assert_shape(
    [history.action, history.reward, history.episode_start], [shape] * 3
  )
  chex.assert_type(
    [history.obs, history.action, history.reward, history.episode_start],
    [jnp.int32, jnp.int32, jnp.float32, bool],
  )
  # Episodes of 20 steps from the centre cell, one stream per actor.
  starts = np.zeros(config.steps_per_stream, bool)
  starts[::20] = True
  np.testing.assert_array_equal(
    history.episode_start, np.broadcast_to(starts, shape)
  )
  np.testing.assert_array_equal(history.obs[:, ::20], 4)
  # Each reward is paid for the action taken on `obs`: +1 iff it lands on
  # the goal.
  moved = np.clip(history.obs + MOVES[np.asarray(history.action)], 0, 8)
  on_goal = np.all(moved == np.asarray(params.goal), -1)
  np.testing.assert_array_equal(history.reward, on_goal.astype(np.float32))


def test_vmap_over_tasks_equals_per_task_runs(tiny):
  env, params = tiny['env'], tiny['params']
  tasks = env.tasks(params, 'train', num=3, seed=1)
  keys = jax.random.split(jax.random.key(2), 3)
  states, histories = tiny['batched'](keys, tasks)
  for i in range(3):
    state, history = tiny['single'](keys[i], _index(tasks, i))
    chex.assert_trees_all_equal(history, _index(histories, i))
    chex.assert_trees_all_close(
      state.params, _index(states.params, i), rtol=1e-5, atol=1e-6
    )


def test_traces_once_across_task_batches(tiny):
  env, params = tiny['env'], tiny['params']
  keys = jax.random.split(jax.random.key(3), 3)
  for seed in range(3):
    tasks = env.tasks(params, 'train', num=3, seed=seed)
    jax.block_until_ready(tiny['batched'](keys, tasks))


def test_annealed_step_size_changes_the_run(tiny):
  key, params = jax.random.key(0), tiny['params']
  plain, _ = tiny['single'](key, params)
  config = dataclasses.replace(tiny['config'], anneal_learning_rate=True)
  annealed, _ = jax.jit(tiny['make_train'](config, tiny['env']))(key, params)
  chex.assert_tree_all_finite(annealed.params)
  with pytest.raises(AssertionError):
    chex.assert_trees_all_close(annealed.params, plain.params)


def test_observed_episode_return_is_one_more_input(tiny):
  config = dataclasses.replace(tiny['config'], observe_episode_return=True)
  train = jax.jit(tiny['make_train'](config, tiny['env']))
  state, history = train(jax.random.key(0), tiny['params'])
  # Dark Room's (x, y) as two one-hot codes of 9, then the return so far.
  kernel = state.params['params']['Dense_0']['kernel']
  chex.assert_shape(kernel, (2 * 9 + 1, config.hidden[0]))
  chex.assert_tree_all_finite(state.params)
  chex.assert_shape(history.action, (2, config.steps_per_stream))


@pytest.mark.parametrize(
  'field, value',
  [
    ('num_actors', 0),
    ('rollout_len', 0),
    ('num_updates', 0),
    ('num_epochs', 0),
    ('num_minibatches', 0),
    ('num_minibatches', 3),  # 2 actors x 20 steps do not split in 3
    ('hidden', ()),
    ('learning_rate', 0.0),
    ('discount', 1.5),
    ('gae_lambda', -0.1),
    ('clip_eps', 0.0),
    ('max_grad_norm', 0.0),
  ],
)
def test_impossible_config_is_named(field, value):
  env, _ = envs.make('dark_room')
  config, make_train = agents.get('ppo', **TINY)
  with pytest.raises(ValueError, match=f'{field}={value}'):
    make_train(dataclasses.replace(config, **{field: value}), env)


def test_unknown_setting_is_named_with_the_known_ones():
  with pytest.raises(ValueError, match=r"\['num_actor'\].*'num_actors'"):
    agents.get('ppo', num_actor=4)
  assert agents.get('a2c')[1] is actor_critic.make_train
