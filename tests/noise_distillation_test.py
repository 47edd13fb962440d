"""Noise distillation (AD-epsilon): from random walks to optimal episodes."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from algdist import agents, envs, rollout
from algdist.agents import noise_distillation

NUM_TASKS = 8
# (env, steps per history): 100 Dark Room episodes; 100 to 250 Key-to-Door.
SETTINGS = [('dark_room', 2000), ('dark_key_to_door', 5000)]


def _complete_episode_returns(history):
  """Returns of one stream's complete episodes (the last may be cut off)."""
  num = int(np.asarray(history.episode_start).sum())
  return np.asarray(rollout.stream_episode_returns(history, num))[:-1]


@pytest.mark.slow  # learning check
@pytest.mark.parametrize(('name', 'num_steps'), SETTINGS)
def test_histories_rise_from_random_to_optimal(name, num_steps):
  env, params = envs.make(name)
  config, make_train = agents.get(
    'noise_distillation', num_steps=num_steps, anneal_fraction=0.8
  )
  train = jax.jit(jax.vmap(make_train(config, env)))
  tasks = env.tasks(params, 'train', num=NUM_TASKS, seed=2)
  optimal = np.asarray(env.optimal_return(tasks))
  keys = jax.random.split(jax.random.key(0), NUM_TASKS)
  state, history = train(keys, tasks)
  chex.assert_shape(history.action, (NUM_TASKS, 1, num_steps))
  chex.assert_type(history.obs, jnp.int32)
  np.testing.assert_array_equal(state.epsilon, 0.0)
  first = []
  for i in range(NUM_TASKS):
    stream = jax.tree.map(lambda x, i=i: x[i, 0], history)
    returns = _complete_episode_returns(stream)
    assert len(returns) >= 50
    first.append(returns[:5].mean() / optimal[i])
    # Epsilon 0 over the last fifth of the history: every episode optimal.
    np.testing.assert_array_equal(returns[-10:], optimal[i])
  # Epsilon near 1: random walks, far below the optimum (a uniform policy
  # earns about 0.12 of it on Key-to-Door, 0.02 on Dark Room).
  assert np.mean(first) < 0.3, first
  # Same seed, same history; other seeds, other histories.
  chex.assert_trees_all_equal(train(keys, tasks), (state, history))
  other = train(jax.random.split(jax.random.key(1), NUM_TASKS), tasks)[1]
  assert not np.array_equal(other.action, history.action)


def test_epsilon_anneals_linearly_then_stays():
  config, _ = agents.get('noise_distillation', num_steps=100)
  epsilon = np.asarray(noise_distillation.epsilon_at(config, jnp.arange(100)))
  np.testing.assert_allclose(epsilon[:91], 1 - np.arange(91) / 90, atol=1e-6)
  np.testing.assert_array_equal(epsilon[90:], 0.0)


def test_random_actions_are_uniform_at_epsilon_one():
  env, params = envs.make('dark_room')
  config, make_train = agents.get(
    'noise_distillation', num_steps=500, num_actors=4, epsilon_end=1.0
  )
  state, history = jax.jit(make_train(config, env))(jax.random.key(0), params)
  chex.assert_shape(history.obs, (4, 500, 2))
  counts = np.bincount(np.asarray(history.action).ravel(), minlength=5)
  np.testing.assert_allclose(counts / counts.sum(), 0.2, atol=0.03)
  assert float(state.epsilon) == 1.0


def test_refuses_impossible_config():
  env, _ = envs.make('dark_room')
  config, make_train = agents.get('noise_distillation', anneal_fraction=1.5)
  with pytest.raises(ValueError, match='anneal_fraction=1.5'):
    make_train(config, env)
