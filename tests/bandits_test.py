"""UCB1 and Thompson sampling on the Adversarial Bandit."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from algdist import agents, envs

# Runs are tasks x learners; each fixture compiles its learner twice (batched
# and single), which is most of this file's time.
NUM_TASKS, NUM_LEARNERS = 16, 2


def _index(tree, *i):
  return jax.tree.map(lambda x: x[i], tree)


def _run(name, seed=0, **config):
  """Tasks x learners runs of `name`, checking one trace across task sets."""
  env, params = envs.make('adversarial_bandit')
  config, make_train = agents.get(name, **config)
  train = make_train(config, env)
  keys = jax.random.split(jax.random.key(seed), (NUM_TASKS, NUM_LEARNERS))
  broadcast = lambda tasks: jax.tree.map(
    lambda x: jnp.repeat(x[:, None], NUM_LEARNERS, 1), tasks
  )
  chex.clear_trace_counter()

  @jax.jit
  @chex.assert_max_traces(n=1)
  def run(keys, tasks):
    return jax.vmap(jax.vmap(train))(keys, tasks)

  run(keys, broadcast(env.tasks(params, 'test', num=NUM_TASKS, seed=seed)))
  tasks = env.tasks(params, 'train', num=NUM_TASKS, seed=seed)
  state, history = run(keys, broadcast(tasks))
  return dict(
    config=config,
    train=train,
    keys=keys,
    tasks=tasks,
    state=state,
    history=history,
  )


@pytest.fixture(scope='module')
def ucb():
  return _run('ucb', num_pulls=2000)


@pytest.fixture(scope='module')
def thompson():
  return _run('thompson', seed=1, num_actors=2)


def _pulled_means(run):
  """Mean of the arm pulled [N, L, A, T]."""
  means = run['tasks'].means[:, None, None, :]
  action = run['history'].action
  return jnp.take_along_axis(means, action, -1)


def test_ucb_regret_grows_sublinearly(ucb):
  best = ucb['tasks'].means.max(-1)[:, None, None, None]
  regret = np.asarray(best - _pulled_means(ucb)).mean((0, 1, 2))  # [T]
  cumulative = regret.cumsum()
  # Linear regret would quadruple from 500 to 2,000 pulls; UCB1's grows
  # logarithmically once every arm is known.
  assert cumulative[1999] / cumulative[499] < 3.0, cumulative[[499, 1999]]
  per_pull = regret.reshape(4, 500).mean(1)
  assert np.all(np.diff(per_pull) < 0), per_pull
  assert per_pull[-1] < 0.5 * per_pull[0], per_pull


def test_ucb_pulls_every_arm_once_first(ucb):
  first = np.asarray(ucb['history'].action[..., :10]).reshape(-1, 10)
  np.testing.assert_array_equal(
    np.sort(first, -1), np.broadcast_to(np.arange(10), first.shape)
  )
  # Ties are broken at random, not in arm order.
  assert len({tuple(a) for a in first}) > 1


def test_thompson_beats_uniform_random(thompson):
  assert thompson['config'].num_pulls == 100  # the default history length
  mean_reward = float(_pulled_means(thompson).mean())
  uniform = float(thompson['tasks'].means.mean())
  assert mean_reward > uniform + 0.2, (mean_reward, uniform)
  # It learns: the last 20 pulls beat the first 20.
  curve = _pulled_means(thompson).mean((0, 1, 2))
  assert float(curve[-20:].mean()) > float(curve[:20].mean()) + 0.1


@pytest.mark.parametrize('name', ['ucb', 'thompson'])
def test_history_shapes_and_episodes(name, request):
  run = request.getfixturevalue(name)
  history, config = run['history'], run['config']
  shape = (NUM_TASKS, NUM_LEARNERS, config.num_actors, config.num_pulls)
  chex.assert_shape(history.obs, (*shape, 1))
  chex.assert_shape(
    [history.action, history.reward, history.episode_start], shape
  )
  chex.assert_type(
    [history.obs, history.action, history.reward, history.episode_start],
    [jnp.int32, jnp.int32, jnp.float32, bool],
  )
  assert bool(history.episode_start.all())  # every pull is an episode
  assert set(np.unique(history.reward)) <= {0.0, 1.0}
  # The learner's statistics count every actor's pulls and rewards.
  stats = run['state']
  np.testing.assert_array_equal(
    stats.pulls.sum(-1), np.full(shape[:2], shape[2] * shape[3])
  )
  np.testing.assert_array_equal(
    stats.reward_sums.sum(-1), history.reward.sum((-1, -2))
  )


@pytest.mark.parametrize('name', ['ucb', 'thompson'])
def test_tasks_by_learners_equal_per_task_runs(name, request):
  run = request.getfixturevalue(name)
  single = jax.jit(run['train'])
  batched = (run['state'], run['history'])
  for i, j in [(0, 0), (0, 1), (5, 1)]:
    task = _index(run['tasks'], i)
    chex.assert_trees_all_close(
      single(run['keys'][i, j], task), _index(batched, i, j)
    )
  # Learners of one task draw differently.
  actions = run['history'].action
  assert not np.array_equal(actions[:, 0], actions[:, 1])


def test_configs_and_errors():
  for name in ('ucb', 'thompson'):
    config, _ = agents.get(name)
    assert config.algorithm == name
    assert (config.num_pulls, config.num_actors) == (100, 1)
  env, _ = envs.make('adversarial_bandit')
  config, make_train = agents.get('ucb', algorithm='eps_greedy')
  with pytest.raises(ValueError, match="algorithm='eps_greedy'"):
    make_train(config, env)
  config, make_train = agents.get('thompson', prior_failures=0.0)
  with pytest.raises(ValueError, match='prior_failures=0.0'):
    make_train(config, env)
