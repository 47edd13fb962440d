"""In-context evaluation: frozen models act, and baselines on the same axis.

A rollout is one `lax.scan` over env steps with the env inside: the agent's
own transitions feed back into its next input, built with
`sequence.make_step` exactly as training builds its windows (step t holds
o_t, a_{t-1}, r_{t-1}, start_t; a_{-1} = no_action, r_{-1} = 0). Who acts is
a pluggable `Policy`, so the model, a uniform random policy, the env's
optimal policy and a noisy demonstrator all run in the same code. The model
acts either by decoding against its ring-buffer KV cache (`cached=True`) or
by recomputing the full forward pass over a buffer of recent steps.

`evaluate(config, workdir)` rolls out AD and ED on held-out and training
tasks, runs the baselines (the source algorithm learning from scratch, an
optional other RL learner from scratch, a random policy, the optimum) on the
same tasks and episode axis, and writes WORKDIR/eval/results.json (contract
in DESIGN.md) and returns.npz.

Letters: N tasks, S seeds (rollouts per task), T env steps, E episodes,
A actions, L context steps, W recompute window (steps), O obs shape.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import tqdm
from flax import struct

from algdist import agents, envs, model, sequence, train
from algdist.agents import base

METHODS = ('ad', 'ed', 'source', 'rl_baseline', 'random')
# Rollouts of the model per jitted call: tasks are chunked to stay below it,
# so that paper-scale task counts do not hold every cache at once.
MAX_ROLLOUTS_PER_CALL = 1024


@struct.dataclass
class Rollout:
  """What an agent did; leaves are [..., T]."""

  action: jax.Array  # [T] int32 a_t
  reward: jax.Array  # [T] float32 r_t, paid for a_t
  done: jax.Array  # [T] bool: the episode ended with step t
  obs: jax.Array | None = None  # [T, *O] o_t (record=True only)
  env_state: Any = None  # leaves [T, ...] the state a_t was taken in

  def history(self) -> base.History:
    """The rollout as a source history (record=True), for model_inputs."""
    first = jnp.ones(self.done.shape[:-1] + (1,), bool)
    episode_start = jnp.concatenate([first, self.done[..., :-1]], axis=-1)
    return base.History(
      obs=self.obs,
      action=self.action,
      reward=self.reward,
      episode_start=episode_start,
    )


@dataclasses.dataclass(frozen=True)
class Policy:
  """How an agent acts inside a rollout.

  `init(params, step) -> memory` starts its memory from the first step's
  input (a template: shapes and dtypes); `act(params, key, memory, step,
  env_state, task) -> (action, memory)` takes one step's input (unbatched
  `sequence.Steps`) and returns an int32 action. `params` are the policy's
  own (the model's weights; None for the others).
  """

  init: Callable[[Any, sequence.Steps], Any]
  act: Callable[..., tuple[jax.Array, Any]]


@struct.dataclass
class _RolloutCarry:
  obs: jax.Array  # [*O] o_t
  env_state: Any
  prev_action: jax.Array  # [] int32 a_{t-1}
  prev_reward: jax.Array  # [] float32 r_{t-1}
  episode_start: jax.Array  # [] bool
  memory: Any  # the policy's


def make_policy_rollout(
  env, policy: Policy, num_steps: int, record: bool = False
) -> Callable:
  """`rollout(key, params, task) -> Rollout [T]`: `policy` acts T steps.

  Pure and unbatched: vmap it over seeds and tasks, jit it outside. With
  `record`, the rollout also keeps observations and env states (GIFs,
  tests); evaluation leaves them out to save memory.
  """

  def rollout(key, params, task) -> Rollout:
    num_actions = env.action_space(task).n
    key_reset, key_scan = jax.random.split(key)
    obs, env_state = env.reset(key_reset, task)
    first = sequence.make_step(
      obs,
      jnp.int32(sequence.no_action(num_actions)),
      jnp.float32(0.0),
      jnp.bool_(True),
    )
    carry = _RolloutCarry(
      obs=obs,
      env_state=env_state,
      prev_action=first.prev_action,
      prev_reward=first.prev_reward,
      episode_start=first.episode_start,
      memory=policy.init(params, first),
    )

    def _rollout_step(carry: _RolloutCarry, key_t):
      key_act, key_env = jax.random.split(key_t)
      step = sequence.make_step(
        carry.obs, carry.prev_action, carry.prev_reward, carry.episode_start
      )
      action, memory = policy.act(
        params, key_act, carry.memory, step, carry.env_state, task
      )
      action = action.astype(jnp.int32)
      obs, env_state, reward, terminated, truncated, _ = env.step(
        key_env, carry.env_state, action, task
      )
      done = jnp.logical_or(terminated, truncated)
      reward = reward.astype(jnp.float32)
      out = Rollout(
        action=action,
        reward=reward,
        done=done,
        obs=carry.obs if record else None,
        env_state=carry.env_state if record else None,
      )
      carry = _RolloutCarry(
        obs=obs,
        env_state=env_state,
        prev_action=action,
        prev_reward=reward,
        episode_start=done,
        memory=memory,
      )
      return carry, out

    keys = jax.random.split(key_scan, num_steps)
    _, out = jax.lax.scan(_rollout_step, carry, keys)
    return out

  return rollout


def sample_action(key, logits_A, temperature: float) -> jax.Array:
  """An action from softmax(logits / temperature); argmax at temperature 0."""
  if temperature < 0:
    raise ValueError(f'temperature={temperature} must be >= 0 (0 = greedy).')
  if temperature == 0:
    return jnp.argmax(logits_A, -1).astype(jnp.int32)
  return jax.random.categorical(key, logits_A / temperature).astype(jnp.int32)


def exact_window(config: model.ModelConfig) -> int:
  """Steps the newest logits depend on: num_layers * (L - 1) + 1.

  Decoding is the sliding-window model (see model.py): each layer looks L
  steps back, so a recompute over this many steps equals it, also after the
  ring wraps. Over only the last L steps it is equal with one layer, or
  before the rollout has run L steps.
  """
  return config.num_layers * (config.context_steps - 1) + 1


def model_policy(
  net: model.Transformer,
  temperature: float,
  cached: bool = True,
  window: int | None = None,
) -> Policy:
  """The frozen transformer as a policy; its params are the model's.

  `cached`: one decode step per env step against the KV cache. Otherwise the
  recompute variant: a buffer of the last `window` steps' inputs (default
  `exact_window`) and a full forward pass each step, reading the newest
  step's logits.
  """
  cfg = net.config
  cfg.validate()
  add_batch = lambda step: jax.tree.map(lambda x: x[None], step)

  if cached:

    def init(params, step):
      del params, step
      return model.init_cache(cfg, 1)

    def act(params, key, cache, step, env_state, task):
      del env_state, task
      logits_1xA, cache = net.apply(
        {'params': params},
        add_batch(step),
        cache,
        method=model.Transformer.decode,
      )
      return sample_action(key, logits_1xA[0], temperature), cache

    return Policy(init=init, act=act)

  size = exact_window(cfg) if window is None else window
  if size < 1:
    raise ValueError(f'window={window} must be >= 1 steps.')

  def init_buffer(params, step):
    del params
    # Filled left to right: the padding after step t is never attended to
    # by step t (causal), so it may hold anything; copies of the first step.
    steps = jax.tree.map(lambda x: jnp.broadcast_to(x, (size,) + x.shape), step)
    return steps, jnp.zeros((), jnp.int32)

  def act_recompute(params, key, memory, step, env_state, task):
    del env_state, task
    steps_W, t = memory
    full = t >= size
    # Once full, shift left by one so that the newest step goes last.
    steps_W = jax.tree.map(
      lambda b: jnp.where(full, jnp.roll(b, -1, axis=0), b), steps_W
    )
    index = jnp.minimum(t, size - 1)
    steps_W = jax.tree.map(
      lambda b, x: jax.lax.dynamic_update_index_in_dim(b, x, index, 0),
      steps_W,
      step,
    )
    logits_1xWxA = net.apply(
      {'params': params}, add_batch(steps_W), deterministic=True
    )
    logits_A = jax.lax.dynamic_index_in_dim(
      logits_1xWxA[0], index, 0, keepdims=False
    )
    return sample_action(key, logits_A, temperature), (steps_W, t + 1)

  return Policy(init=init_buffer, act=act_recompute)


def _stateless(choose: Callable) -> Policy:
  """A memoryless policy from `choose(key, env_state, task) -> action`."""

  def act(params, key, memory, step, env_state, task):
    del params, step
    return choose(key, env_state, task), memory

  return Policy(init=lambda params, step: (), act=act)


def random_policy(num_actions: int) -> Policy:
  """Uniform over the actions."""
  return _stateless(
    lambda key, env_state, task: jax.random.randint(key, (), 0, num_actions)
  )


def oracle_policy(env) -> Policy:
  """The env's optimal policy (`env.optimal_action`)."""
  return _stateless(
    lambda key, env_state, task: env.optimal_action(env_state, task)
  )


def epsilon_optimal_policy(
  env, num_actions: int, epsilon: float | None = None
) -> Policy:
  """The optimal action, or with probability epsilon a uniform one.

  With `epsilon` None, the policy's params are epsilon (a traced scalar:
  one compilation serves every demonstration quality).
  """

  def act(params, key, memory, step, env_state, task):
    del step
    rate = params if epsilon is None else epsilon
    key_coin, key_action = jax.random.split(key)
    noise = jax.random.randint(key_action, (), 0, num_actions)
    best = env.optimal_action(env_state, task).astype(jnp.int32)
    return jnp.where(jax.random.bernoulli(key_coin, rate), noise, best), memory

  return Policy(init=lambda params, step: (), act=act)


def prompted_policy(
  demonstrator: Policy, learner: Policy, num_prompt_episodes: int
) -> Policy:
  """The demonstrator acts for the first episodes, then the learner.

  Its params are (demonstrator's, learner's). The learner sees every step
  from the start (its cache or buffer fills with the demonstration, whose
  actions become its inputs' a_{t-1}), so from episode
  `num_prompt_episodes` on it continues in the same context.
  """

  def init(params, step):
    demo_params, learner_params = params
    return (
      demonstrator.init(demo_params, step),
      learner.init(learner_params, step),
      jnp.zeros((), jnp.int32),
    )

  def act(params, key, memory, step, env_state, task):
    demo_params, learner_params = params
    demo_memory, learner_memory, started = memory
    key_demo, key_learner = jax.random.split(key)
    started = started + step.episode_start.astype(jnp.int32)
    demo_action, demo_memory = demonstrator.act(
      demo_params, key_demo, demo_memory, step, env_state, task
    )
    action, learner_memory = learner.act(
      learner_params, key_learner, learner_memory, step, env_state, task
    )
    in_prompt = started <= num_prompt_episodes
    action = jnp.where(in_prompt, demo_action.astype(jnp.int32), action)
    return action, (demo_memory, learner_memory, started)

  return Policy(init=init, act=act)


def episode_length(task) -> int:
  """The env's episode cap in steps (gymnax's max_steps_in_episode)."""
  return int(task.max_steps_in_episode)


def make_rollout(
  env,
  net: model.Transformer,
  num_steps: int,
  temperature: float = 1.0,
  cached: bool = True,
  window: int | None = None,
  record: bool = False,
) -> Callable:
  """`rollout(key, params, task) -> Rollout [T]` of the frozen model.

  Unbatched (the cache has batch 1): evaluate many with
  `jax.jit(jax.vmap(jax.vmap(rollout, (0, None, None)), (0, None, 0)))`.
  """
  policy = model_policy(net, temperature, cached=cached, window=window)
  return make_policy_rollout(env, policy, num_steps, record=record)


def make_prompted_rollout(
  env,
  net: model.Transformer,
  num_prompt_episodes: int,
  num_episodes: int,
  task_template,
  temperature: float = 1.0,
  cached: bool = True,
  record: bool = False,
) -> Callable:
  """`rollout(key, params, task, epsilon) -> Rollout` prompted with
  demonstrations.

  An epsilon-optimal demonstrator (the env's optimal action, uniform with
  probability `epsilon`, a traced scalar) acts for `num_prompt_episodes`
  episodes while the model reads along; then the model acts on, in the
  same context, for `num_episodes` more. Rollout steps cover (prompt +
  episodes) full-length episodes, so at least that many episodes end.
  """
  num_actions = env.action_space(task_template).n
  policy = prompted_policy(
    epsilon_optimal_policy(env, num_actions),
    model_policy(net, temperature, cached=cached),
    num_prompt_episodes,
  )
  num_steps = (num_prompt_episodes + num_episodes) * episode_length(
    task_template
  )
  inner = make_policy_rollout(env, policy, num_steps, record=record)

  def rollout(key, params, task, epsilon):
    return inner(key, (jnp.asarray(epsilon, jnp.float32), params), task)

  return rollout


def episode_returns(reward_T, done_T, num_episodes: int) -> jax.Array:
  """Return of each of the first `num_episodes` episodes [E].

  Episodes are counted from `done` (they can end early: dark_room_hard,
  key-to-door); episodes that did not end within the rollout are NaN.
  """
  done_T = done_T.astype(jnp.int32)
  episode_T = jnp.cumsum(done_T) - done_T  # ends count from the next step
  returns_E = jax.ops.segment_sum(reward_T, episode_T, num_episodes + 1)
  ended_E = jax.ops.segment_sum(done_T, episode_T, num_episodes + 1)
  return jnp.where(ended_E > 0, returns_E, jnp.nan)[:num_episodes]


def stream_episode_returns(
  history: base.History, num_episodes: int, max_length: int
) -> jax.Array:
  """Returns of the first episodes of one source stream [T] -> [E].

  A stream has no `done`: an episode counts as ended when another starts
  after it or it ran the full `max_length`; the others (and missing ones)
  are NaN.
  """
  starts_T = history.episode_start.astype(jnp.int32)
  episode_T = jnp.cumsum(starts_T) - 1
  returns_E = jax.ops.segment_sum(
    history.reward.astype(jnp.float32), episode_T, num_episodes
  )
  length_E = jax.ops.segment_sum(
    jnp.ones_like(starts_T), episode_T, num_episodes
  )
  ended_E = (jnp.arange(num_episodes) < starts_T.sum() - 1) | (
    length_E >= max_length
  )
  return jnp.where(ended_E, returns_E, jnp.nan)


def make_returns_fn(
  env, policy: Policy, num_episodes: int, task_template
) -> Callable:
  """Jitted `fn(keys [N, S], params, tasks [N]) -> returns [N, S, E]`."""
  num_steps = num_episodes * episode_length(task_template)
  rollout = make_policy_rollout(env, policy, num_steps)

  def returns(key, params, task):
    out = rollout(key, params, task)
    return episode_returns(out.reward, out.done, num_episodes)

  return jax.jit(jax.vmap(jax.vmap(returns, (0, None, None)), (0, None, 0)))


def make_source_returns_fn(
  source_config, env, num_episodes: int, task_template
) -> tuple[Callable, int]:
  """Jitted `fn(keys [N, S], tasks [N]) -> returns [N, S, E]` of the source
  algorithm learning from scratch (its actor 0's stream), and its actors
  per learner.

  A learner with A actors consumes A episodes of experience per episode of
  one stream; the count is returned so that reports can say so.
  """
  algorithm_config, make_train = agents.get(
    source_config.algorithm, **source_config.config.to_dict()
  )
  learn = make_train(algorithm_config, env)
  max_length = episode_length(task_template)

  def returns(key, task):
    _, history = learn(key, task)  # [A, T]
    stream = jax.tree.map(lambda x: x[0], history)
    return stream_episode_returns(stream, num_episodes, max_length)

  fn = jax.jit(jax.vmap(jax.vmap(returns, (0, None)), (0, 0)))
  return fn, int(getattr(algorithm_config, 'num_actors', 1))


def _chunked(fn: Callable, keys_NxS, tasks, chunk: int) -> np.ndarray:
  """fn(keys, tasks) over chunks of `chunk` tasks (the last one padded, so
  that every call has one shape and compiles once) -> numpy [N, ...]."""
  num = keys_NxS.shape[0]
  chunk = max(1, min(chunk, num))
  outs = []
  for start in range(0, num, chunk):
    index = np.minimum(np.arange(start, start + chunk), num - 1)
    part = fn(keys_NxS[index], jax.tree.map(lambda x, i=index: x[i], tasks))
    outs.append(np.asarray(part)[: num - start])
  return np.concatenate(outs, 0)


def _over_splits(fn: Callable, keys: dict, splits: dict, chunk: int) -> dict:
  """`_chunked` over every split's tasks at once -> {split: [N, ...]}.

  One batch for all splits: a rollout is a sequential scan, so test and
  train tasks side by side take the time of one split, not two.
  """
  names = list(splits)
  sizes = [jax.tree.leaves(splits[s])[0].shape[0] for s in names]
  keys_NxS = jnp.concatenate([keys[s] for s in names])
  tasks = jax.tree.map(
    lambda *x: np.concatenate(x), *[splits[s] for s in names]
  )
  out = _chunked(fn, keys_NxS, tasks, chunk)
  return dict(zip(names, np.split(out, np.cumsum(sizes)[:-1]), strict=True))


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


def _summarise(returns_NxSxE, optimal_N) -> dict:
  """One method on one split: the results.json entry (DESIGN.md)."""
  num_tasks, num_seeds, _ = returns_NxSxE.shape
  flat = returns_NxSxE.reshape(num_tasks * num_seeds, -1).astype(np.float64)
  # Keep the episodes every rollout finished (a short source run can end
  # before E); NaN never reaches the JSON.
  finished = np.all(np.isfinite(flat), axis=0)
  count = int(np.argmin(finished)) if not finished.all() else flat.shape[1]
  flat = flat[:, :count]
  mean = flat.mean(0)
  entry = {
    'episode_returns': [float(x) for x in mean],
    'episode_returns_std': [float(x) for x in flat.std(0)],
    'last_episode_return': float(mean[-1]) if count else None,
    'num_tasks': int(num_tasks),
    'num_seeds': int(num_seeds),
    'num_episodes': count,
  }
  if optimal_N is not None and count:
    best = float(np.mean(optimal_N))
    entry['fraction_of_optimal'] = float(mean[-1] / max(best, 1e-12))
    # Regret: the return given up against the optimum, summed over episodes
    # (for a bandit, where a pull is an episode, the usual cumulative regret).
    entry['cumulative_regret'] = float(np.sum(best - mean))
    # Speed of in-context learning: the first episode (1-based) whose mean
    # return reaches 80% of optimal, or null if none does.
    reached = np.flatnonzero(mean >= 0.8 * best)
    entry['first_episode_reaching_80pct'] = (
      int(reached[0]) + 1 if reached.size else None
    )
  return entry


def _is_pixel(env, env_params) -> bool:
  obs = jax.eval_shape(lambda: env.reset(jax.random.key(0), env_params)[0])
  return obs.ndim == 3 and obs.dtype == jnp.uint8


def _write_json(path: str, obj) -> None:
  """Atomically: a reader sees the old file or the new one, never half."""
  tmp = path + '.tmp'
  with open(tmp, 'w') as f:
    json.dump(obj, f, indent=1, allow_nan=False)
  os.replace(tmp, path)


def _restore(config, workdir: str, method: str):
  """`(ModelConfig, params)`, or None (logged) when there is no checkpoint.

  Only a missing checkpoint is skipped: one that does not fit the config
  raises (train.CheckpointError says how to fix it).
  """
  directory = os.path.join(workdir, 'checkpoints', method)
  steps = os.listdir(directory) if os.path.isdir(directory) else []
  if not any(name.isdigit() for name in steps):
    logging.warning(
      'Skipping %s in evaluation: no checkpoint in %s (run --mode train).',
      method,
      directory,
    )
    return None
  return train.restore_params(config, workdir, method)


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
  env, env_params = envs.make(config.env.name, **config.env.overrides.to_dict())
  num_actions = env.action_space(env_params).n
  splits = {
    'test': _task_split(env, env_params, 'test', e.num_test_tasks, e.seed),
    'train': _task_split(env, env_params, 'train', e.num_train_tasks, e.seed),
  }
  splits = {k: v for k, v in splits.items() if v is not None}
  optimal = {k: _optimal_returns(env, v) for k, v in splits.items()}
  base_key = jax.random.key(e.seed)
  keys = {
    split: jax.random.split(
      jax.random.fold_in(base_key, envs.SPLITS.index(split)),
      (jax.tree.leaves(tasks)[0].shape[0], e.num_seeds),
    )
    for split, tasks in splits.items()
  }
  chunk = max(1, MAX_ROLLOUTS_PER_CALL // e.num_seeds)

  def policy_returns(fn, params):
    run = lambda k, t: fn(k, params, t)
    return _over_splits(run, keys, splits, chunk)

  # AD and ED share one model shape, so one compiled rollout serves both:
  # the second skips a compile (about 2 s of Dark Room's evaluation).
  model_fns = {}  # ModelConfig -> jitted returns fn

  returns, extra = {}, {}
  bar = tqdm.tqdm(e.methods, desc='eval', disable=not progress)
  for method in bar:
    bar.set_postfix_str(method)
    logging.info('Evaluating %s on %s.', method, ', '.join(splits))
    if method in ('ad', 'ed'):
      restored = _restore(config, workdir, method)
      if restored is None:
        continue
      cfg, params = restored
      net = model.Transformer(cfg)
      if cfg not in model_fns:
        policy = model_policy(net, e.temperature)
        model_fns[cfg] = make_returns_fn(
          env, policy, e.num_episodes, env_params
        )
      returns[method] = policy_returns(model_fns[cfg], params)
      extra[method] = {'episodes_of_experience_per_episode': 1}
      pixels = _is_pixel(env, env_params)
      if pixels and 'test' in splits and jax.process_index() == 0:
        write_rollout_gif(
          env,
          net,
          params,
          jax.tree.map(lambda x: x[0], splits['test']),
          keys['test'][0, 0],
          os.path.join(workdir, 'eval', f'{method}_test.gif'),
          temperature=e.temperature,
        )
    elif method == 'random':
      fn = make_returns_fn(
        env, random_policy(num_actions), e.num_episodes, env_params
      )
      returns[method] = policy_returns(fn, None)
      extra[method] = {'episodes_of_experience_per_episode': 1}
    elif method in ('source', 'rl_baseline'):
      learner = config.source if method == 'source' else e.rl_baseline
      fn, num_actors = make_source_returns_fn(
        learner, env, e.num_episodes, env_params
      )
      learners = max(1, config.histories.learners_per_shard // e.num_seeds)
      returns[method] = _over_splits(fn, keys, splits, learners)
      extra[method] = {
        'algorithm': learner.algorithm,
        # Each point on the episode axis is one episode of one actor's
        # stream, but the learner used num_actors episodes to get there.
        'episodes_of_experience_per_episode': num_actors,
      }
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
      m: {s: {**_summarise(r[s], optimal[s]), **extra[m]} for s in r}
      for m, r in returns.items()
    },
    'temperature': float(e.temperature),
    'num_episodes': int(e.num_episodes),
  }
  directory = os.path.join(workdir, 'eval')
  path = os.path.join(directory, 'results.json')
  # Earlier stages' wall times, as the command line records them.
  seconds = {}
  if os.path.exists(os.path.join(workdir, 'seconds.json')):
    with open(os.path.join(workdir, 'seconds.json')) as f:
      seconds = json.load(f)
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
    _write_json(path, results)
  return results


def prompted_returns(
  env,
  net: model.Transformer,
  params,
  tasks,
  keys_NxS,
  *,
  epsilons,
  num_prompt_episodes: int,
  num_episodes: int,
  temperature: float,
) -> np.ndarray:
  """Returns [P, N, S, prompt + E] of rollouts prompted with
  demonstrations, one row per epsilon (one compilation for all)."""
  template = jax.tree.map(lambda x: x[0], tasks)
  rollout = make_prompted_rollout(
    env,
    net,
    num_prompt_episodes,
    num_episodes,
    template,
    temperature=temperature,
  )
  total = num_prompt_episodes + num_episodes

  def returns(key, params, task, epsilon):
    out = rollout(key, params, task, epsilon)
    return episode_returns(out.reward, out.done, total)

  fn = jax.jit(
    jax.vmap(jax.vmap(returns, (0, None, None, None)), (0, None, 0, None))
  )
  chunk = max(1, MAX_ROLLOUTS_PER_CALL // keys_NxS.shape[1])
  return np.stack(
    [
      _chunked(lambda k, t, e=e: fn(k, params, t, e), keys_NxS, tasks, chunk)
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
  for method in ('ad', 'ed'):
    if method not in e.methods:
      continue
    restored = _restore(config, workdir, method)
    if restored is None:
      continue
    cfg, params = restored
    returns_PxNxSxE = prompted_returns(
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
    for epsilon, r in zip(epsilons, returns_PxNxSxE, strict=True):
      prompt = r[..., :num_prompt_episodes]
      entry = _summarise(r[..., num_prompt_episodes:], optimal_N)
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
    _write_json(os.path.join(directory, 'prompted.json'), results)
  return results


def write_rollout_gif(
  env,
  net: model.Transformer,
  params,
  task,
  key,
  path: str,
  num_episodes: int = 2,
  temperature: float = 1.0,
) -> str | None:
  """A GIF of one rollout of the model on one task (pixel envs): the agent's
  view, with a top-down map beside it where the env draws one (watermaze).

  Returns the path, or None (logged) when imageio is not installed.
  """
  from algdist import report  # noqa: PLC0415  (matplotlib only when needed)

  num_steps = num_episodes * episode_length(task)
  rollout = jax.jit(make_rollout(env, net, num_steps, temperature, record=True))
  out = jax.device_get(rollout(key, params, task))
  top_down = None
  if env.name == 'watermaze':
    from algdist.envs import watermaze  # noqa: PLC0415

    draw = jax.jit(jax.vmap(watermaze.render_top_down, (0, None)))
    top_down = np.asarray(draw(out.env_state, task))
  return report.rollout_gif(path, np.asarray(out.obs), top_down)


def bench_eval_steps(
  context: int,
  cached: bool,
  batch: int = 64,
  num_steps: int | None = None,
) -> dict:
  """eval_steps_per_s/<kv_cache|recompute>/<context>: Dark Room rollouts.

  The Dark Room default model (4 layers, width 64) with random weights
  acts in `batch` envs; env steps per second after compilation. The
  recompute variant reruns the full forward pass over the last `context`
  steps each step, as implementations without a cache do (exact for one
  layer; here it stands for their cost).
  """
  env, env_params = envs.make('dark_room')
  cfg = model.ModelConfig(
    num_actions=env.action_space(env_params).n,
    obs_encoder='embed',
    obs_vocab=env_params.size,
    context_steps=context,
    dropout=0.0,
  )
  net = model.Transformer(cfg)
  example = model.example_steps(cfg, (2,), jnp.int32)
  init = lambda key: net.init(key, example, deterministic=True)['params']
  params = nn.meta.unbox(jax.jit(init)(jax.random.key(0)))
  if num_steps is None:
    # Every step costs the same (the cache always attends over its C slots;
    # recompute always runs over its full buffer), so a few steps suffice;
    # recompute at 1,024 steps of context takes seconds per step on a CPU.
    num_steps = 128 if cached else max(2, 2048 // context)
  rollout = make_rollout(
    env, net, num_steps, cached=cached, window=None if cached else context
  )
  tasks = env.tasks(env_params, 'train', num=batch)
  keys = jax.random.split(jax.random.key(0), batch)
  run = jax.jit(jax.vmap(rollout, (0, None, 0)))
  compiled = run.lower(keys, params, tasks).compile()
  start = time.perf_counter()
  jax.block_until_ready(compiled(keys, params, tasks))
  seconds = time.perf_counter() - start
  return dict(
    value=batch * num_steps / seconds,
    unit='steps/s',
    batch=batch,
    steps=num_steps,
    context=context,
  )
