"""In-context evaluation: frozen models act, and baselines on the same axis.

The stage; rollouts and policies live in `algdist.rollout`. `evaluate`
rolls out AD and ED on held-out and training tasks and runs the baselines
(the source algorithm and optionally another RL learner from scratch, a
random policy, the optimum) on the same tasks and episode axis, one function
per method (`_METHODS`); it writes WORKDIR/eval/results.json (contract in
DESIGN.md; its scores, AD against its source among them, come from
`algdist.scores`) and returns.npz. `evaluate_prompts`: paper Fig. 5.

Shape letters: the glossary in algdist/__init__.py; R: rollouts per task.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import tqdm

from algdist import (
  agents,
  checkpoints,
  config_lib,
  envs,
  files,
  model,
  rollout,
  scores,
  sharding,
  train,
  video,
)

# Rollouts of the model per device and jitted call: tasks are chunked to
# stay below it, so that paper-scale task counts do not hold every cache at
# once.
MAX_ROLLOUTS_PER_CALL = 1024


def make_returns_fn(
  env, policy: rollout.Policy, num_episodes: int, task_template
) -> Callable:
  """Jitted `fn(keys [N, R], params, tasks [N]) -> returns [N, R, E]`."""
  num_steps = num_episodes * rollout.episode_length(task_template)
  run = rollout.make_policy_rollout(env, policy, num_steps)

  def returns(key, params, task):
    return run(key, params, task).episode_returns(num_episodes)

  return jax.jit(jax.vmap(jax.vmap(returns, (0, None, None)), (0, None, 0)))


def make_source_returns_fn(
  source_config, env, task_template
) -> tuple[Callable, int]:
  """Jitted `fn(keys [N, R], tasks [N]) -> returns [N, R, E]` of the source
  algorithm learning from scratch over its whole run (its actor 0's
  stream: E = T // the episode limit, the episodes every run holds; where
  episodes end early a run holds more), and its actors per learner.

  The whole run, not the models' E: "how much experience does the source
  need" has no answer on a curve cut short. A learner whose A actors pool
  their experience used A episodes of it per episode of one stream (1 for
  a module with POOLS_ACTORS = False); reports say how many.
  """
  algorithm_config, make_train = agents.get(
    source_config.algorithm, **source_config.config.to_dict()
  )
  learn = make_train(algorithm_config, env)
  max_length = rollout.episode_length(task_template)

  def returns(key, task):
    _, history = learn(key, task)  # [H, T]
    stream = jax.tree.map(lambda x: x[0], history)
    # T is static while tracing: the whole run's episodes, no extra trace.
    num_episodes = max(1, stream.reward.shape[-1] // max_length)
    return rollout.stream_episode_returns(stream, num_episodes, max_length)

  fn = jax.jit(jax.vmap(jax.vmap(returns, (0, None)), (0, 0)))
  actors = int(getattr(algorithm_config, 'num_actors', 1))
  return fn, actors if agents.pools_actors(source_config.algorithm) else 1


def _over_splits(
  fn: Callable, keys: dict, splits: dict, mesh, chunk=MAX_ROLLOUTS_PER_CALL
) -> dict:
  """`fn(keys [n, R], tasks [n]) -> [n, R, ...]` over every split's tasks
  -> {split: numpy [N, R, ...]}, each (task, seed) pair a row of its own,
  the rows split over all devices of `mesh` (`chunk` rollouts per device
  and call at most; `sharding.map_rows`).

  Pairs, not tasks: 16 held-out tasks x 5 seeds fill 80 devices. One batch
  for all splits: a rollout is a sequential scan, so test and train tasks
  side by side take the time of one split, not two.
  """
  names = list(splits)
  sizes = [keys[s].size for s in names]
  seeds = keys[names[0]].shape[1]
  flat_keys = jnp.concatenate([keys[s].reshape(-1, 1) for s in names])
  tasks = jax.tree.map(
    lambda *x: np.repeat(np.concatenate(x), seeds, 0),
    *[splits[s] for s in names],
  )
  out = sharding.map_rows(fn, flat_keys, tasks, chunk, mesh)  # [rows, 1, ..]
  out = out.reshape(-1, seeds, *out.shape[2:])
  parts = np.split(out, np.cumsum(sizes)[:-1] // seeds)
  return dict(zip(names, parts, strict=True))


def _task_split(env, env_params, split: str, num: int, seed: int):
  """Tasks of `split`: all of them for num == -1, else `num` seeded ones."""
  if num == 0:
    return None
  return env.tasks(env_params, split, num=None if num == -1 else num, seed=seed)


def _optimal_returns(env, tasks) -> np.ndarray | None:
  try:
    return np.asarray(env.optimal_return(tasks), np.float64)
  except NotImplementedError:
    return None


def _restore(config, workdir: str, method: str):
  """`(ModelConfig, params, extra entries of results.json)`, or None
  (logged) without a checkpoint. One of another config or model raises
  (CheckpointError says how to fix it), and so does a partly trained one
  unless evaluation.allow_partial."""
  directory = checkpoints.directory(workdir, method)
  found = checkpoints.provenance(workdir, method)
  if found is None:
    logging.warning('Skipping %s: no checkpoint in %s.', method, directory)
    return None
  checkpoints.check_provenance(
    found, config_lib.training_fields(config, method), directory
  )
  if not found.finished and not config.evaluation.allow_partial:
    raise checkpoints.CheckpointError(
      f'{method} is partly trained (update {found.step} of '
      f'{found.num_steps} in {directory}): run --mode train to finish it, '
      'or pass --config.evaluation.allow_partial=True to evaluate it as it '
      'is (its results are then marked partial).'
    )
  cfg, params = checkpoints.restore_params(config, workdir, method)
  extra = {'checkpoint_step': found.step, 'partial': not found.finished}
  return cfg, params, extra


def provenance(config, workdir: str) -> dict:
  """What results.json is made from: the config (sharding aside, which
  changes no score) and the newest checkpoint of each model evaluated.
  Results are current exactly when this equals their recorded one."""
  sections = tuple(k for k in config.keys() if k != 'sharding')
  found = {
    m: checkpoints.provenance(workdir, m)
    for m in train.METHODS
    if m in config.evaluation.methods
  }
  return {
    'config': config_lib.fingerprint(config, sections),
    'checkpoints': {m: f and f.step for m, f in found.items()},
  }


@dataclasses.dataclass
class _Stage:
  """What every method's evaluation shares: the env, tasks and keys."""

  config: Any
  workdir: str
  env: Any
  env_params: Any
  splits: dict  # split -> tasks, leaves [N, ...]
  keys: dict  # split -> keys [N, R]
  mesh: jax.sharding.Mesh  # sharding.rows_mesh(): rollouts split over it
  # AD and ED share one model shape, so one compiled rollout serves both:
  # the second skips a compile (about 2 s of Dark Room's evaluation).
  model_fns: dict = dataclasses.field(default_factory=dict)

  def policy_returns(self, fn: Callable, params) -> dict:
    """{split: returns [N, R, E]} of a `make_returns_fn` fn."""
    params = sharding.replicate(params, self.mesh)
    run = lambda k, t: fn(k, params, t)
    return _over_splits(run, self.keys, self.splits, self.mesh)

  def gif(self, method: str, write: Callable, **kwargs) -> None:
    """On image observations, a GIF of the method's first held-out rollout
    (WORKDIR/eval/<method>_test.gif; process 0): `write` is one of
    video.write_rollout_gif (a policy) or write_learner_gif (a learner)."""
    image = len(self.env.observation_space(self.env_params).shape) == 3
    if image and 'test' in self.splits and jax.process_index() == 0:
      task = jax.tree.map(lambda x: x[0], self.splits['test'])
      path = os.path.join(self.workdir, 'eval', f'{method}_test.gif')
      write(self.env, task, self.keys['test'][0, 0], path, **kwargs)


def _model_returns(stage: _Stage, method: str):
  """AD or ED acting with frozen weights from an empty context (None
  without a checkpoint); on pixel tasks also a GIF of a held-out rollout."""
  e = stage.config.evaluation
  restored = _restore(stage.config, stage.workdir, method)
  if restored is None:
    return None
  cfg, params, extra = restored
  policy = rollout.model_policy(model.Transformer(cfg), e.temperature)
  if cfg not in stage.model_fns:
    stage.model_fns[cfg] = make_returns_fn(
      stage.env, policy, e.num_episodes, stage.env_params
    )
  returns = stage.policy_returns(stage.model_fns[cfg], params)
  stage.gif(method, video.write_rollout_gif, policy=policy, params=params)
  return returns, {'episodes_of_experience_per_episode': 1, **extra}


def _random_returns(stage: _Stage, method: str):
  """A uniform random policy."""
  policy = rollout.random_policy(stage.env.action_space(stage.env_params).n)
  fn = make_returns_fn(
    stage.env, policy, stage.config.evaluation.num_episodes, stage.env_params
  )
  extra = {'episodes_of_experience_per_episode': 1}
  returns = stage.policy_returns(fn, None)
  stage.gif(method, video.write_rollout_gif, policy=policy, params=None)
  return returns, extra


def _learner_returns(stage: _Stage, method: str):
  """The source algorithm ('source') or another RL learner ('rl_baseline')
  learning from scratch on the same tasks."""
  config, e = stage.config, stage.config.evaluation
  learner = config.source if method == 'source' else e.rl_baseline
  fn, num_actors = make_source_returns_fn(learner, stage.env, stage.env_params)
  per_call = config.histories.learners_per_shard  # learners, per device
  returns = _over_splits(fn, stage.keys, stage.splits, stage.mesh, per_call)
  stage.gif(method, video.write_learner_gif, learner=learner)
  return returns, {
    'algorithm': learner.algorithm,
    # Each point on the episode axis is one episode of one actor's stream,
    # but the learner used num_actors episodes to get there.
    'episodes_of_experience_per_episode': num_actors,
  }


# Method -> fn(stage, method) -> ({split: returns [N, R, E]}, extra entries
# of results.json) or None (skipped); the model methods are train's.
_METHODS = {
  **dict.fromkeys(train.METHODS, _model_returns),
  'source': _learner_returns,
  'rl_baseline': _learner_returns,
  'random': _random_returns,
}
METHODS = tuple(_METHODS)


def _stage(config, workdir: str) -> _Stage:
  """The env, the test and train tasks and one key per task and seed."""
  e = config.evaluation
  env, env_params = envs.make(config.env.name, **config.env.overrides.to_dict())
  splits = {
    'test': _task_split(env, env_params, 'test', e.num_test_tasks, e.seed),
    'train': _task_split(env, env_params, 'train', e.num_train_tasks, e.seed),
  }
  splits = {k: v for k, v in splits.items() if v is not None}
  base_key = jax.random.key(e.seed)
  keys = {
    split: jax.random.split(
      jax.random.fold_in(base_key, envs.SPLITS.index(split)),
      (jax.tree.leaves(tasks)[0].shape[0], e.num_seeds),
    )
    for split, tasks in splits.items()
  }
  mesh = sharding.rows_mesh()
  return _Stage(config, workdir, env, env_params, splits, keys, mesh)


def evaluate(config, workdir: str, progress: bool = True) -> dict:
  """Evaluates config.evaluation.methods; writes WORKDIR/eval/results.json
  and returns.npz ([task, seed, episode] returns), and returns the results.

  AD and ED act with frozen weights from an empty context; a method whose
  checkpoint is missing is skipped with a warning. 'test' tasks are the
  family's held-out split, 'train' tasks come from its training split.
  """
  start = time.perf_counter()
  e = config.evaluation
  unknown = sorted(set(e.methods) - set(METHODS))
  if unknown:
    raise ValueError(
      f'evaluation.methods has unknown {unknown}; use some of {METHODS}.'
    )
  # Checked before any rollout, so that a bad config loses no work.
  if 'rl_baseline' in e.methods and not e.rl_baseline.algorithm:
    raise ValueError(
      "evaluation.methods has 'rl_baseline' but "
      'evaluation.rl_baseline.algorithm is empty; name one of '
      f'{agents.names()}.'
    )
  stage = _stage(config, workdir)
  optimal = {k: _optimal_returns(stage.env, v) for k, v in stage.splits.items()}
  returns, extra = {}, {}
  bar = tqdm.tqdm(e.methods, desc='eval', disable=not progress)
  for method in bar:
    bar.set_postfix_str(method)
    logging.info('Evaluating %s on %s.', method, ', '.join(stage.splits))
    out = _METHODS[method](stage, method)
    if out is None:
      continue
    returns[method], extra[method] = out
    logging.info(
      '%s: %.1f s into evaluation.', method, time.perf_counter() - start
    )
  bar.close()

  results = {
    'env': config.env.name,
    'optimal_return': {
      s: None if optimal.get(s) is None else float(np.mean(optimal[s]))
      for s in ('test', 'train')
    },
    'methods': {
      m: {s: {**scores.summarise(r[s], optimal[s]), **extra[m]} for s in r}
      for m, r in returns.items()
    },
    'temperature': float(e.temperature),
    'num_episodes': int(e.num_episodes),
  }
  results['ad_versus'] = scores.ad_versus_learners(results)
  results['ad_late_versus'] = scores.ad_late_versus(results)
  results['provenance'] = provenance(config, workdir)
  directory = os.path.join(workdir, 'eval')
  # Earlier stages' wall times, as the command line records them.
  seconds = files.read_json(os.path.join(workdir, 'seconds.json'), {})
  results['seconds'] = {**seconds, 'eval': time.perf_counter() - start}
  if jax.process_index() == 0:
    os.makedirs(directory, exist_ok=True)
    arrays = {
      f'{m}_{s}': r[s].astype(np.float32) for m, r in returns.items() for s in r
    }
    arrays.update(
      {f'optimal_{s}': o for s, o in optimal.items() if o is not None}
    )
    np.savez(os.path.join(directory, 'returns.npz'), **arrays)
    files.write_json(os.path.join(directory, 'results.json'), results)
  return results


def prompted_returns(
  env,
  net: model.Transformer,
  params,
  tasks,
  keys_NxR,
  *,
  epsilons,
  num_prompt_episodes: int,
  num_episodes: int,
  temperature: float,
) -> np.ndarray:
  """Returns [P, N, S, prompt + E] of rollouts prompted with
  demonstrations, one row per epsilon (one compilation for all)."""
  template = jax.tree.map(lambda x: x[0], tasks)
  prompted = rollout.make_prompted_rollout(
    env,
    net,
    num_prompt_episodes,
    num_episodes,
    template,
    temperature=temperature,
  )
  total = num_prompt_episodes + num_episodes
  returns = lambda k, p, t, e: prompted(k, p, t, e).episode_returns(total)

  fn = jax.jit(
    jax.vmap(jax.vmap(returns, (0, None, None, None)), (0, None, 0, None))
  )
  mesh = sharding.rows_mesh()
  params = sharding.replicate(params, mesh)
  run = lambda e: lambda k, t: fn(k, params, t, e)
  return np.stack(
    [
      _over_splits(run(e), {0: keys_NxR}, {0: tasks}, mesh)[0]
      for e in np.asarray(epsilons, np.float32)
    ]
  )


def evaluate_prompts(
  config,
  workdir: str,
  epsilons=(0.0, 0.25, 0.5, 0.75, 1.0),
  num_prompt_episodes: int = 2,
  split: str = 'test',
) -> dict:
  """Paper Fig. 5: AD and ED prompted with demonstrations of varied quality.

  The demonstrator is the env's optimal policy mixed with uniform actions
  at rate epsilon; each prompt's measured return is reported next to the
  model's episodes after it. Writes WORKDIR/eval/prompted.json.
  """
  e = config.evaluation
  env, env_params = envs.make(config.env.name, **config.env.overrides.to_dict())
  num = e.num_test_tasks if split == 'test' else e.num_train_tasks
  tasks = _task_split(env, env_params, split, num, e.seed)
  optimal_N = _optimal_returns(env, tasks)
  num_tasks = jax.tree.leaves(tasks)[0].shape[0]
  keys = jax.random.split(
    jax.random.fold_in(jax.random.key(e.seed), 7), (num_tasks, e.num_seeds)
  )
  results = {
    'env': config.env.name,
    'split': split,
    'num_prompt_episodes': num_prompt_episodes,
    'optimal_return': None if optimal_N is None else float(optimal_N.mean()),
    'methods': {},
  }
  for method in train.METHODS:
    if method not in e.methods:
      continue
    restored = _restore(config, workdir, method)
    if restored is None:
      continue
    cfg, params, _ = restored
    returns_PxNxRxE = prompted_returns(
      env,
      model.Transformer(cfg),
      params,
      tasks,
      keys,
      epsilons=epsilons,
      num_prompt_episodes=num_prompt_episodes,
      num_episodes=e.num_episodes,
      temperature=e.temperature,
    )
    rows = []
    for epsilon, r in zip(epsilons, returns_PxNxRxE, strict=True):
      prompt = r[..., :num_prompt_episodes]
      entry = scores.summarise(r[..., num_prompt_episodes:], optimal_N)
      entry.update(epsilon=float(epsilon), prompt_return=float(prompt.mean()))
      if optimal_N is not None:
        entry['prompt_fraction_of_optimal'] = float(
          prompt.mean() / max(float(optimal_N.mean()), 1e-12)
        )
      rows.append(entry)
    results['methods'][method] = rows
  if jax.process_index() == 0:
    directory = os.path.join(workdir, 'eval')
    os.makedirs(directory, exist_ok=True)
    files.write_json(os.path.join(directory, 'prompted.json'), results)
  return results
