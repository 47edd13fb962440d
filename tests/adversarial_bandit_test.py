"""Adversarial Bandit: rewards, the train/test parity shift, the optimum."""

import chex
import jax
import jax.numpy as jnp
import numpy as np

from algdist import envs, rollout


def test_shapes_episode_of_one_pull_and_trace_once():
  env, params = envs.make('adversarial_bandit')
  tasks = env.tasks(params, 'train', num=3)
  chex.assert_shape(tasks.means, (3, 10))
  chex.clear_trace_counter()

  @jax.jit
  @chex.assert_max_traces(n=1)
  def step(key, state, action, task):
    return env.step(key, state, action, task)

  _, state = env.reset(jax.random.key(0), params)
  for i in range(3):
    task = jax.tree.map(lambda x, i=i: x[i], tasks)
    obs, state, reward, term, trunc, _ = step(
      jax.random.key(i), state, jnp.int32(i), task
    )
    chex.assert_shape(obs, (1,))
    assert bool(trunc) and not bool(term)  # every pull is an episode


def test_rewards_are_bernoulli_with_the_arm_means():
  env, params = envs.make('adversarial_bandit')
  means = jnp.linspace(0.05, 0.95, 10)
  params = params.replace(means=means)
  _, state = env.reset(jax.random.key(0), params)
  keys = jax.random.split(jax.random.key(1), 20000)
  pull = jax.vmap(
    lambda k, a: env.step(k, state, a, params)[2], in_axes=(0, None)
  )
  for arm in (0, 4, 9):
    rewards = np.asarray(pull(keys, jnp.int32(arm)))
    assert set(np.unique(rewards)) <= {0.0, 1.0}
    np.testing.assert_allclose(rewards.mean(), means[arm], atol=0.015)


def test_oracle_earns_the_optimal_return_on_average():
  env, params = envs.make('adversarial_bandit')
  tasks = env.tasks(params, 'test', num=8)
  oracle = rollout.make_policy_rollout(env, rollout.oracle_policy(env), 5000)
  run = jax.vmap(lambda k, p: oracle(k, None, p).reward)
  rewards = run(jax.random.split(jax.random.key(0), 8), tasks)
  np.testing.assert_allclose(
    rewards.mean(-1), env.optimal_return(tasks), atol=0.03
  )


def test_best_arm_parity_shifts_between_splits():
  env, params = envs.make('adversarial_bandit')
  for split, parity in (('train', 1), ('test', 0)):
    means = np.asarray(env.tasks(params, split, num=4000, seed=1).means)
    assert np.all((means >= 0) & (means <= 1))
    share = np.mean(means.argmax(-1) % 2 == parity)
    np.testing.assert_allclose(share, 0.95, atol=0.015)


def test_tasks_are_deterministic_and_splits_disjoint():
  env, params = envs.make('adversarial_bandit')
  a = env.tasks(params, 'train', num=100, seed=3)
  chex.assert_trees_all_equal(a, env.tasks(params, 'train', num=100, seed=3))
  b = env.tasks(params, 'test', num=100, seed=3)
  rows = lambda t: {tuple(r) for r in np.asarray(t.means)}
  assert not rows(a) & rows(b)
  other = env.tasks(params.replace(split_seed=1), 'train', num=100, seed=3)
  assert not rows(a) & rows(other)
