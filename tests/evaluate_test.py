"""In-context evaluation: rollouts, baselines, results.json and the report."""

import functools
import json
import logging
import os

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from algdist import (
  envs,
  evaluate,
  histories,
  model,
  report,
  rollout,
  scores,
  sequence,
  train,
)
from configs import dark_room

NUM_ACTIONS = 5


@functools.cache
def _tiny(num_layers=1, context_steps=8, obs_encoder='embed'):
  """A tiny model with random weights, and its params (built once)."""
  cfg = model.ModelConfig(
    num_actions=NUM_ACTIONS if obs_encoder == 'embed' else 8,
    obs_encoder=obs_encoder,
    obs_vocab=9 if obs_encoder == 'embed' else 0,
    context_steps=context_steps,
    num_layers=num_layers,
    num_heads=2,
    d_model=16,
    d_ff=32,
    dropout=0.0,
  )
  net = model.Transformer(cfg)
  obs = (
    ((2,), jnp.int32) if obs_encoder == 'embed' else ((72, 96, 3), jnp.uint8)
  )
  example = model.example_steps(cfg, *obs)
  init = jax.jit(lambda key: net.init(key, example, deterministic=True))
  return net, nn.meta.unbox(init(jax.random.key(1))['params'])


def _batched(fn):
  """Over seeds [N, R] (shared task) and tasks [N], jitted once."""
  return jax.vmap(jax.vmap(fn, (0, None, None)), (0, None, 0))


def test_rollout_traces_once_and_has_the_documented_shapes():
  env, params = envs.make('dark_room')
  net, weights = _tiny()
  num_steps = 2 * 20
  batched = _batched(rollout.make_rollout(env, net, num_steps))

  def rollouts(keys, weights, tasks):
    return batched(keys, weights, tasks)

  chex.clear_trace_counter()
  run = jax.jit(chex.assert_max_traces(rollouts, n=1))
  tasks = env.tasks(params, 'test', num=3)
  for seed in range(2):  # a second call must not retrace
    keys = jax.random.split(jax.random.key(seed), (3, 2))
    out = run(keys, weights, tasks)
  chex.assert_shape([out.action, out.reward, out.done], (3, 2, num_steps))
  assert out.obs is None and out.env_state is None  # not recorded by default
  assert out.action.dtype == jnp.int32 and out.reward.dtype == jnp.float32
  assert out.done.dtype == jnp.bool_
  action = np.asarray(out.action)
  assert action.min() >= 0 and action.max() < NUM_ACTIONS
  # Dark Room truncates every 20 steps, whoever acts.
  done = np.asarray(out.done)
  assert done[..., 19::20].all() and done.sum() == 3 * 2 * 2


def test_episode_returns_count_episodes_from_done():
  reward = jnp.array([0, 1, 0, 1, 1, 0, 0, 2], jnp.float32)
  done = jnp.array([0, 1, 0, 0, 1, 1, 0, 0], bool)
  # Episodes: [0, 1] [2, 3, 4] [5] and [6, 7] unfinished.
  action = jnp.zeros(8, jnp.int32)
  returns = rollout.Rollout(action, reward, done).episode_returns(4)
  np.testing.assert_array_equal(returns[:3], [1.0, 2.0, 0.0])
  assert np.isnan(returns[3])


def _random_walk_return(goal, size=9, horizon=20):
  """Exact expected return of the uniform policy in Dark Room (numpy)."""
  prob = np.zeros((size, size))
  prob[size // 2, size // 2] = 1.0
  total = 0.0
  for _ in range(horizon):
    nxt = np.zeros_like(prob)
    for dx, dy in [(0, 0), (0, -1), (0, 1), (-1, 0), (1, 0)]:
      for x in range(size):
        for y in range(size):
          nx = min(max(x + dx, 0), size - 1)
          ny = min(max(y + dy, 0), size - 1)
          nxt[nx, ny] += prob[x, y] / 5
    prob = nxt
    total += prob[goal[0], goal[1]]
  return total


@pytest.mark.parametrize('name', ['dark_room', 'dark_room_hard'])
def test_oracle_earns_the_optimal_return_in_the_same_rollout(name):
  env, params = envs.make(name)
  tasks = env.tasks(params, 'test')
  num_episodes = 3
  fn = evaluate.make_returns_fn(
    env, rollout.oracle_policy(env), num_episodes, params
  )
  num = tasks.goal.shape[0]
  returns = np.asarray(
    fn(jax.random.split(jax.random.key(0), (num, 2)), None, tasks)
  )
  optimal = np.asarray(env.optimal_return(tasks))
  # Hard episodes end on the goal, so more than E fit; the first E count.
  np.testing.assert_array_equal(
    returns, np.broadcast_to(optimal[:, None, None], returns.shape)
  )


def test_random_policy_earns_the_random_walk_return():
  env, params = envs.make('dark_room')
  tasks = env.tasks(params, 'test')
  num, seeds = tasks.goal.shape[0], 64
  fn = evaluate.make_returns_fn(
    env, rollout.random_policy(NUM_ACTIONS), 2, params
  )
  returns = np.asarray(
    fn(jax.random.split(jax.random.key(0), (num, seeds)), None, tasks)
  )
  exact = np.mean([_random_walk_return(g) for g in np.asarray(tasks.goal)])
  per_task = returns.reshape(num, -1)
  stderr = np.sqrt(np.sum(per_task.var(1) / per_task.shape[1])) / num
  assert abs(returns.mean() - exact) < 4 * stderr + 1e-6
  assert returns.mean() < 0.2 * np.asarray(env.optimal_return(tasks)).mean()


# model_test checks decode == the forward pass by default; this checks the
# rollouts built on them agree, in the slow set.
@pytest.mark.slow
def test_cached_and_recomputing_rollouts_choose_the_same_actions():
  env, params = envs.make('dark_room')
  # Two layers: after the ring wraps, the recompute window must span what
  # both layers see (rollout.exact_window), not just the last L steps.
  net, weights = _tiny(num_layers=2, context_steps=6)
  tasks = env.tasks(params, 'test', num=3)
  keys = jax.random.split(jax.random.key(0), (3, 2))
  # 40 steps: the 6-step ring buffer wraps many times.
  actions = [
    np.asarray(
      jax.jit(_batched(rollout.make_rollout(env, net, 40, cached=c)))(
        keys, weights, tasks
      ).action
    )
    for c in (True, False)
  ]
  np.testing.assert_array_equal(actions[0], actions[1])
  assert len(np.unique(actions[0])) > 1  # sampled, not one constant action


def test_prompted_rollout_continues_from_the_demonstration_in_context():
  env, params = envs.make('dark_room')
  net, weights = _tiny()
  task = jax.tree.map(lambda x: x[0], env.tasks(params, 'test', num=1))
  prompt, episodes = 2, 2
  prompted = rollout.make_prompted_rollout(
    env, net, prompt, episodes, task, temperature=0.0, record=True
  )
  out = jax.jit(prompted)(jax.random.key(0), weights, task, 0.0)
  chex.assert_shape(out.action, ((prompt + episodes) * 20,))
  returns = out.episode_returns(prompt + episodes)
  np.testing.assert_array_equal(returns[:prompt], env.optimal_return(task))
  # The greedy continuation is the full forward pass over the whole
  # trajectory, demonstration included: the cache held the prompt.
  steps, _ = sequence.model_inputs(out.history(), NUM_ACTIONS)
  after = prompt * 20
  # The same steps from a fresh start: no prompt, no previous action.
  fresh = jax.tree.map(lambda x: x[after:], steps)
  fresh = fresh.replace(
    prev_action=fresh.prev_action.at[0].set(sequence.no_action(NUM_ACTIONS)),
    prev_reward=fresh.prev_reward.at[0].set(0.0),
  )
  forward = lambda s: net.apply(
    {'params': weights}, jax.tree.map(lambda x: x[None], s), deterministic=True
  )[0]
  logits, fresh_logits = jax.jit(lambda a, b: (forward(a), forward(b)))(
    steps, fresh
  )
  np.testing.assert_array_equal(
    out.action[after:], np.argmax(logits[after:], -1)
  )
  # ...which differs from a fresh start on the same steps.
  assert not np.allclose(logits[after], fresh_logits[0], atol=1e-4)


def test_results_json_follows_the_contract_and_the_report_is_written(
  tmp_path, caplog
):
  config = dark_room.get_config('smoke')
  # Two updates and no validation pass: this test is about evaluation.
  config.train.update(num_steps=2, warmup_steps=1, checkpoint_every=2)
  config.data.num_validation_windows = 0
  workdir = str(tmp_path)
  histories.generate(
    histories.spec_from_config(config),
    os.path.join(workdir, 'histories'),
    progress=False,
  )
  train.train_and_evaluate(config, workdir, 'ad', progress=False)
  with caplog.at_level(logging.WARNING):
    results = evaluate.evaluate(config, workdir, progress=False)
  assert any('Skipping ed' in r.getMessage() for r in caplog.records)

  with open(os.path.join(workdir, 'eval', 'results.json')) as f:
    saved = json.load(f)
  assert saved == json.loads(json.dumps(results))
  e = config.evaluation
  assert saved['env'] == 'dark_room'
  assert set(saved['optimal_return']) == {'test', 'train'}
  assert all(isinstance(v, float) for v in saved['optimal_return'].values())
  # ed: skipped (no checkpoint)
  assert set(saved['methods']) == {'ad', 'source', 'rl_baseline', 'random'}
  for method, by_split in saved['methods'].items():
    assert set(by_split) == {'test', 'train'}, method
    learner = method in ('source', 'rl_baseline')
    for entry in by_split.values():
      # Learners from scratch report their whole run, the rest E episodes.
      episodes = entry['num_episodes'] if learner else e.num_episodes
      assert len(entry['episode_returns']) == episodes >= 1
      assert len(entry['episode_returns_std']) == episodes
      assert entry['last_episode_return'] == entry['episode_returns'][-1]
      assert (entry['num_tasks'], entry['num_seeds']) == (2, e.num_seeds)
      assert all(np.isfinite(entry['episode_returns']))
  baseline = saved['methods']['rl_baseline']['test']
  assert baseline['algorithm'] == 'ppo'
  assert baseline['episodes_of_experience_per_episode'] == 4  # smoke actors
  source = saved['methods']['source']['test']
  assert source['algorithm'] == 'q_learning'
  assert source['episodes_of_experience_per_episode'] == 1
  # Whole runs: 5 PPO updates of one 20-step episode; 100 steps.
  assert baseline['num_episodes'] == source['num_episodes'] == 5
  versus = saved['ad_versus']['rl_baseline']['test']
  assert versus['algorithm'] == 'ppo'
  assert versus['experience_episodes'] == e.num_episodes
  assert saved['seconds']['eval'] > 0

  with np.load(os.path.join(workdir, 'eval', 'returns.npz')) as raw:
    assert raw['ad_test'].shape == (2, e.num_seeds, e.num_episodes)
    np.testing.assert_allclose(
      raw['random_train'].mean((0, 1)),
      saved['methods']['random']['train']['episode_returns'],
      rtol=1e-6,
    )
    assert raw['optimal_test'].shape == (2,)

  # Paper Fig. 5: prompts from an optimal and a uniform demonstrator.
  prompted = evaluate.evaluate_prompts(config, workdir, epsilons=(0.0, 1.0))
  rows = prompted['methods']['ad']
  assert [r['epsilon'] for r in rows] == [0.0, 1.0]
  assert rows[0]['prompt_return'] == pytest.approx(prompted['optimal_return'])
  assert rows[1]['prompt_return'] < rows[0]['prompt_return']
  assert len(rows[0]['episode_returns']) == e.num_episodes
  assert os.path.exists(os.path.join(workdir, 'eval', 'prompted.json'))

  paths = report.write_report(workdir)
  assert os.path.getsize(paths['curves']) > 10_000
  summary = open(paths['summary']).read()
  assert '| AD | test |' in summary and '| random | train |' in summary


def test_summary_reports_regret_and_the_first_episode_at_80pct():
  # Two tasks (optimum 10 and 20, mean 15) x one seed, four episodes.
  returns = np.array([[[0.0, 4.0, 8.0, 10.0]], [[0.0, 16.0, 20.0, 20.0]]])
  entry = scores.summarise(returns, np.array([10.0, 20.0]))
  np.testing.assert_allclose(entry['episode_returns'], [0, 10, 14, 15])
  assert entry['cumulative_regret'] == pytest.approx(15 + 5 + 1 + 0)
  assert entry['first_episode_reaching_80pct'] == 3  # 14 >= 0.8 x 15
  assert entry['fraction_of_optimal'] == pytest.approx(1.0)
  never = scores.summarise(returns * 0.1, np.array([10.0, 20.0]))
  assert never['first_episode_reaching_80pct'] is None
  assert 'cumulative_regret' not in scores.summarise(returns, None)


def test_the_first_and_last_episodes_give_paired_and_independent_intervals():
  # 2 tasks x 2 seeds, 8 episodes: k = 4 at each end.
  ad = np.array(
    [
      [[0, 1, 1, 2, 4, 5, 4, 3], [1, 0, 1, 2, 4, 4, 5, 5]],
      [[1, 1, 0, 2, 5, 4, 4, 4], [0, 0, 1, 3, 3, 5, 5, 4]],
    ],
    np.float64,
  )
  entry = scores.summarise(ad, None)
  early, late = ad[..., :4].mean(-1).ravel(), ad[..., 4:].mean(-1).ravel()
  gain = late - early
  assert entry['early_late_episodes'] == 4
  assert entry['early_mean'] == pytest.approx(early.mean())
  assert entry['late_mean'] == pytest.approx(late.mean())
  half = scores.Z95 * gain.std(ddof=1) / 2  # sem over 4 rollouts
  assert entry['late_minus_early_ci95'] == pytest.approx(
    [gain.mean() - half, gain.mean() + half]
  )
  random = scores.summarise(np.full((2, 2, 8), 0.5) + ad * 0.01, None)
  results = {'methods': {'ad': {'test': entry}, 'random': {'test': random}}}
  versus = scores.ad_late_versus(results)['test']['random']
  diff = entry['late_mean'] - random['late_mean']
  assert versus['difference'] == pytest.approx(diff)
  half = scores.Z95 * np.hypot(entry['late_sem'], random['late_sem'])
  assert versus['difference_ci95'] == pytest.approx([diff - half, diff + half])
  assert versus['ratio'] == pytest.approx(late.mean() / random['late_mean'])
  results |= {'env': 'watermaze', 'optimal_return': {}}
  summary = report.summary_markdown(results | {'ad_late_versus': {}})
  low, high = entry['late_minus_early_ci95']
  assert (
    f'| AD | test | {early.mean():.3f} | {late.mean():.3f} | '
    f'{gain.mean():+.3f} [{low:+.3f}, {high:+.3f}] |' in summary
  )
  summary = report.summary_markdown(
    results | {'ad_late_versus': scores.ad_late_versus(results)}
  )
  assert f'| random | test | {diff:+.3f} [' in summary
  # Under two episodes there are no ends to compare.
  assert 'late_mean' not in scores.summarise(ad[..., :1], None)


def test_ad_and_a_multi_actor_learner_share_the_experience_axis():
  # Optimum 10. AD: one episode of experience per point, 80% at episode 4.
  # The learner pools 4 actors: each point of its stream cost 4 episodes of
  # experience, so its 80% at stream episode 3 is 12 episodes of experience.
  summarise = lambda curve: scores.summarise(
    np.array([[curve]]), np.array([10.0])
  )
  learner = summarise([2.0, 6.0, 9.0, 10.0])
  learner.update(algorithm='ppo', episodes_of_experience_per_episode=4)
  results = {
    'env': 'dark_room',
    'optimal_return': {'test': 10.0, 'train': None},
    'methods': {
      'ad': {'test': summarise([0.0, 4.0, 6.0, 8.0, 10.0, 10.0])},
      'source': {'test': learner},
    },
  }
  versus = scores.ad_versus_learners(results)
  got = versus['source']['test']
  assert got['ad_experience_to_80pct'] == 4
  assert got['learner_experience_to_80pct'] == 12
  assert got['experience_ratio'] == pytest.approx(3.0)
  # Over AD's 6 episodes of experience: AD gives up 10+6+4+2+0+0 = 22; the
  # learner's first stream episode (4 of experience at 2) gives up 4 x 8,
  # then 2 of the next at 6 give up 2 x 4: 40.
  assert got['experience_episodes'] == 6
  assert got['ad_regret'] == pytest.approx(22.0)
  assert got['learner_regret'] == pytest.approx(40.0)
  assert got['regret_ratio'] == pytest.approx(22.0 / 40.0)
  # A learner curve shorter than AD's experience has no regret to compare.
  assert scores.regret_over_experience([2.0], 4, 6, 10.0) is None
  summary = report.summary_markdown(results | {'ad_versus': versus})
  row = '| source (ppo) | test | 4 | 12 | 3.00x | 6 | 22.0 | 40.0 | 0.55 |'
  assert row in summary


@pytest.mark.slow  # learning check
def test_rl_baseline_learns_from_scratch_beside_a_demonstrator_source(
  tmp_path,
):
  config = dark_room.get_config('smoke')
  # A demonstrator source, as in the ad_epsilon preset.
  config.source = dark_room.get_config('ad_epsilon').source
  config.source.config.num_steps = 100
  assert config.source.algorithm == 'noise_distillation'
  config.evaluation.update(num_episodes=8, num_test_tasks=1, num_train_tasks=0)
  config.evaluation.methods = ('rl_baseline',)
  config.evaluation.rl_baseline.algorithm = ''
  with pytest.raises(ValueError, match='rl_baseline.algorithm is empty'):
    evaluate.evaluate(config, str(tmp_path), progress=False)
  config.evaluation.rl_baseline.algorithm = 'q_learning'
  config.evaluation.rl_baseline.config = ml_collections.ConfigDict()
  config.evaluation.methods = ('source', 'rl_baseline')
  results = evaluate.evaluate(config, str(tmp_path), progress=False)
  baseline = results['methods']['rl_baseline']['test']
  source = results['methods']['source']['test']
  assert baseline['algorithm'] == 'q_learning'
  assert source['algorithm'] == 'noise_distillation'
  # Its whole run (Q-learning's default 4,000 steps), not AD's 8 episodes.
  assert len(baseline['episode_returns']) == 200
  # Two different learners on the same tasks and seeds.
  assert baseline['episode_returns'] != source['episode_returns']
  summary = report.summary_markdown(results)
  assert '| RL from scratch (q_learning) | test |' in summary
