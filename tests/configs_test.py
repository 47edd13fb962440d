"""Every experiment config: its sections and presets, and its smoke run.

The smoke preset of each config runs the whole pipeline (generate -> train
AD and ED -> eval -> report) through `main.run`, as the command line does,
and WORKDIR/eval/results.json is checked against DESIGN.md's contract.
"""

import dataclasses
import json
import math
import os
import time

import jax
import ml_collections
import numpy as np
import pytest

from algdist import agents, envs, histories, main, train
from configs import (
  adversarial_bandit,
  dark_key_to_door,
  dark_room,
  dark_room_hard,
  dmlab_watermaze,
)

SLOW = pytest.mark.slow  # a whole pipeline
CONFIGS = {
  'dark_room': dark_room,
  'dark_room_hard': dark_room_hard,
  'dark_key_to_door': dark_key_to_door,
  'adversarial_bandit': adversarial_bandit,
  'dmlab_watermaze': dmlab_watermaze,
}
PRESETS = ('smoke', None, 'paper')
# Presets beyond these three, per config.
EXTRA_PRESETS = {
  'dark_room': ('ad_epsilon', 'ppo'),
  'dark_room_hard': ('ad_epsilon', 'coverage', 'ppo'),
  'dark_key_to_door': ('ad_epsilon', 'coverage', 'ppo'),
  'adversarial_bandit': ('ucb',),
  'dmlab_watermaze': (
    'search',
    'search_smoke',
    'dyna_q',
    'dyna_q_smoke',
    'dqn',
    'paper_smoke',
  ),
}
SECTIONS = (
  'env',
  'source',
  'histories',
  'model',
  'data',
  'train',
  'ed',
  'sharding',
  'evaluation',
)
# Families whose episodes may end before max_steps_in_episode (at a goal or
# a door): how many steps their expert episodes hold depends on the data.
ENDS_EARLY = ('dark_room_hard', 'dark_key_to_door')
# The smoke runs' cheapest, for the rerun test.
DEFAULT_PIPELINE = ('dark_room', 'smoke')
# Smoke pipelines (config, preset) run here: the default one by default,
# the others in the slow set. Watermaze's run by default in their own file
# (watermaze_presets_test.py, so that they run beside this one).
SMOKE_RUNS = [(n, 'smoke') for n in CONFIGS if n != 'dmlab_watermaze']


def locked(name: str, preset: str | None):
  """The config as the command line gives it: locked (a typo is an error)."""
  config = CONFIGS[name].get_config(preset)
  config.lock()
  return config


def steps_per_history(config, learner=None) -> int:
  """T of the histories the config's source (or `learner`, a section of the
  same shape) generates, from shapes alone."""
  learner = learner or config.source
  env, params = envs.make(config.env.name, **config.env.overrides.to_dict())
  algorithm_config, make_train = agents.get(
    learner.algorithm, **learner.config.to_dict()
  )
  learn = make_train(algorithm_config, env)
  task = env.tasks(params, 'train', num=1, seed=0)
  task = jax.tree.map(lambda x: x[0], task)
  _, history = jax.eval_shape(learn, jax.random.key(0), task)
  return history.action.shape[-1]


def check_expert_windows(config, num_tasks: int) -> None:
  """Every one of `num_tasks` training tasks' real histories holds ED's
  expert episodes, and they span a training window."""
  env, params = envs.make(config.env.name, **config.env.overrides.to_dict())
  algorithm_config, make_train = agents.get(
    config.source.algorithm, **config.source.config.to_dict()
  )
  tasks = env.tasks(params, 'train', num=num_tasks, seed=0)
  keys = jax.random.split(jax.random.key(0), num_tasks)
  _, history = jax.jit(jax.vmap(make_train(algorithm_config, env)))(keys, tasks)
  starts_HxT = np.asarray(history.episode_start).reshape(
    -1, history.action.shape[-1]
  )
  for starts_T in starts_HxT:
    begins = np.flatnonzero(starts_T)
    assert len(begins) >= config.ed.expert_episodes
    span = len(starts_T) - begins[-config.ed.expert_episodes]
    assert span >= config.data.window_steps


@pytest.mark.parametrize(
  'name,preset',
  [(n, p) for n in CONFIGS for p in PRESETS + EXTRA_PRESETS.get(n, ())],
)
def test_every_preset_builds_every_section_consistently(name, preset):
  config = locked(name, preset)
  assert config.preset == (preset or 'default')
  for section in SECTIONS:
    assert isinstance(config[section], ml_collections.ConfigDict), section
  assert config.env.name in envs.names()
  # Every setting of each learner is present, so any can be overridden
  # from the command line.
  learners = [config.source]
  if config.evaluation.rl_baseline.algorithm:
    learners.append(config.evaluation.rl_baseline)
  for learner in learners:
    algorithm_config, _ = agents.get(learner.algorithm)
    settings = set(dataclasses.asdict(algorithm_config)) - {'algorithm'}
    assert set(learner.config) == settings, learner.algorithm
  # The stages' own checks, made here without data or compilation.
  assert config.model.context_steps <= config.data.window_steps
  for method in ('ad', 'ed'):
    t = train.train_section(config, method)
    assert 0 <= t.warmup_steps < t.num_steps, method
  env, params = envs.make(config.env.name, **config.env.overrides.to_dict())
  steps = steps_per_history(config)  # the learner's whole stream
  episode = params.max_steps_in_episode
  # A history keeps episodes 0, k, 2k, ...: from shapes alone its length is
  # known where episodes last `episode` steps, or where all are kept.
  every = config.histories.subsample_every
  if every == 1 or name not in ENDS_EARLY:
    kept = -(-(steps // episode) // every) * episode
    # Windows fit in a history, and every history has the expert episodes
    # ED keeps (each episode lasts at most `episode` steps).
    assert config.data.window_steps <= kept
    if config.ed.expert_episodes > kept // episode:
      # Shapes cannot show it (a source whose episodes end early, at a goal
      # or a door, holds more): its real histories must.
      check_expert_windows(config, min(config.histories.num_tasks, 256))
  else:
    # Kept episodes of varying length: only real histories bound a
    # history's length (the loader names one too short for the windows),
    # and none can promise ED's expert windows.
    assert 'ed' not in config.train.methods
  if name not in ENDS_EARLY:
    # Fixed-length episodes: ED's expert steps are known in advance.
    assert config.ed.expert_episodes * episode >= config.data.window_steps
  # A learning source's stream holds every evaluated episode (a
  # demonstrator's curve is its history's length: it is the data, not a
  # learner to beat).
  e = config.evaluation
  assert 1 <= e.num_episodes
  if config.source.algorithm != 'noise_distillation':
    assert e.num_episodes <= steps // episode
  if 'rl_baseline' in e.methods:
    # The RL baseline learns from at least as many episodes of experience
    # as AD is evaluated on (a learner pools its actors' episodes).
    learner = config.evaluation.rl_baseline
    baseline = steps_per_history(config, learner)
    actors = learner.config.get('num_actors', 1)
    assert e.num_episodes <= baseline // episode * actors
  # Evaluation tasks exist (-1, all, only where a family has a finite set).
  for split, num in (('test', e.num_test_tasks), ('train', e.num_train_tasks)):
    if num != 0:
      env.tasks(params, split, num=None if num == -1 else num, seed=e.seed)


@pytest.mark.parametrize('name', CONFIGS)
def test_typos_and_unknown_presets_are_errors(name):
  config = locked(name, 'smoke')
  with pytest.raises(AttributeError, match='num_stpes'):
    config.train.num_stpes = 1
  with pytest.raises(AttributeError):
    config.evaluation.num_episode = 1
  config.train.num_steps = 1  # an existing field stays settable
  with pytest.raises(ValueError, match='Unknown preset'):
    CONFIGS[name].get_config('tiny')


@pytest.fixture(scope='module')
def smoke_run(tmp_path_factory):
  """`smoke_run(name, preset) -> (config, workdir, seconds)`: a smoke
  preset run end to end through `main.run`, once per module."""
  done = {}

  def get(name, preset):
    if (name, preset) not in done:
      config = locked(name, preset)
      workdir = str(tmp_path_factory.mktemp(f'{preset}_{name}'))
      start = time.perf_counter()
      main.run(config, workdir)
      done[name, preset] = (config, workdir, time.perf_counter() - start)
    return done[name, preset]

  return get


def _read_results(workdir: str) -> dict:
  with open(os.path.join(workdir, 'eval', 'results.json')) as f:
    return json.load(f)


@pytest.mark.parametrize(
  'name, preset',
  [
    run if run == DEFAULT_PIPELINE else pytest.param(*run, marks=SLOW)
    for run in SMOKE_RUNS
  ],
)
def test_smoke_pipeline_writes_results_of_the_contract(name, preset, smoke_run):
  config, workdir, _ = smoke_run(name, preset)
  check_smoke_results(name, config, workdir)


def check_smoke_results(name: str, config, workdir: str) -> None:
  """What every smoke pipeline must have written, by the contract."""
  e = config.evaluation
  results = _read_results(workdir)
  assert results['env'] == config.env.name
  assert set(results['optimal_return']) == {'test', 'train'}
  for value in results['optimal_return'].values():
    assert value is None or math.isfinite(value)
  assert set(results['methods']) == set(e.methods)
  num_tasks = {'test': e.num_test_tasks, 'train': e.num_train_tasks}
  for method, splits in results['methods'].items():
    assert set(splits) == {'test', 'train'}, method
    for split, entry in splits.items():
      where = f'{method}/{split}'
      returns = entry['episode_returns']
      # Learners from scratch report their whole run, the rest E episodes.
      learner = method in ('source', 'rl_baseline')
      episodes = entry['num_episodes'] if learner else e.num_episodes
      assert len(returns) == episodes >= 1, where
      assert len(entry['episode_returns_std']) == episodes, where
      assert len(entry['episode_returns_sem']) == episodes, where
      assert all(math.isfinite(r) for r in returns), where
      assert math.isfinite(entry['last_episode_return']), where
      assert entry['last_episode_return'] == returns[-1], where
      assert entry['num_tasks'] == num_tasks[split], where
      assert entry['num_seeds'] == e.num_seeds, where
  seconds = results['seconds']
  assert {'generate', 'train', 'eval'} <= set(seconds), seconds
  assert all(math.isfinite(v) and v >= 0 for v in seconds.values()), seconds
  for file in ('learning_curves.png', 'summary.md'):
    assert os.path.getsize(os.path.join(workdir, 'eval', file)) > 0, file
  with open(os.path.join(workdir, 'histories', 'manifest.json')) as f:
    assert json.load(f)['complete']
  for method in config.train.methods:
    steps = os.listdir(os.path.join(workdir, 'checkpoints', method))
    assert str(train.train_section(config, method).num_steps) in steps, method
  if name == 'dmlab_watermaze':  # pixels: rollouts as GIFs too
    methods = ['ad', 'ed', 'random']
    if config.source.algorithm != 'dqn':  # a pose learner keeps its states
      methods.append('source')
    for method in methods:
      assert os.path.exists(os.path.join(workdir, 'eval', f'{method}_test.gif'))


def _snapshot(workdir: str) -> dict:
  """What a rerun must leave alone: results, checkpoints, metrics, data."""

  def read(*parts):
    with open(os.path.join(workdir, *parts), 'rb') as f:
      return f.read()

  manifest = json.loads(read('histories', 'manifest.json'))
  # A resumed generate adds its own (near-zero) time to the manifest.
  manifest.pop('seconds')
  return {
    'results': read('eval', 'results.json'),
    'returns_mtime': os.path.getmtime(
      os.path.join(workdir, 'eval', 'returns.npz')
    ),
    'manifest': manifest,
    'checkpoints': {
      m: sorted(os.listdir(os.path.join(workdir, 'checkpoints', m)))
      for m in ('ad', 'ed')
    },
    'metrics': {m: read('metrics', f'train_{m}.jsonl') for m in ('ad', 'ed')},
  }


def test_rerunning_a_finished_workdir_skips_every_stage(smoke_run):
  config, workdir, first_seconds = smoke_run(*DEFAULT_PIPELINE)
  before = _snapshot(workdir)
  start = time.perf_counter()
  main.run(config, workdir)
  seconds = time.perf_counter() - start
  assert _snapshot(workdir) == before
  # Nothing is generated, trained or evaluated again: only loading, a
  # checkpoint restore per method and the report.
  assert seconds < 0.5 * first_seconds, (seconds, first_seconds)
  histories.load(os.path.join(workdir, 'histories'))  # checksums still hold
