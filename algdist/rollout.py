"""Rollouts: an agent acts in an env inside one `lax.scan`, and the returns.

A rollout is one `lax.scan` over env steps with the env inside: the agent's
own transitions feed back into its next input, built with
`sequence.make_step` exactly as training builds its windows (step t holds
o_t, a_{t-1}, r_{t-1}, start_t; a_{-1} = no_action, r_{-1} = 0). Who acts is
a pluggable `Policy`, so the model, a uniform random policy, the env's
optimal policy and a noisy demonstrator all run in the same code. The model
acts either by decoding against its ring-buffer KV cache (`cached=True`) or
by recomputing the full forward pass over a buffer of recent steps.

`episode_returns` counts returns per episode for rollouts, source streams
and stored histories alike. (Source learners step their actors with
`agents.base.step_actors`: a batched network acts for all A outside the env
step and needs `next_obs`; both are thin over gymnax's `env.step`.)

Shape letters: see the glossary in algdist/__init__.py.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from algdist import model, sequence
from algdist.agents import base


@struct.dataclass
class Rollout:
  """What an agent did; leaves are [..., T]."""

  action: jax.Array  # [T] int32 a_t
  reward: jax.Array  # [T] float32 r_t, paid for a_t
  done: jax.Array  # [T] bool: the episode ended with step t
  # record=True only:
  obs: jax.Array | None = None  # [T, *O] o_t
  env_state: Any = None  # leaves [T, ...] the state a_t was taken in
  terminated: jax.Array | None = None  # [T] bool: `done` by the task's end
  truncated: jax.Array | None = None  # [T] bool: `done` by the time limit

  @property
  def episode_start(self) -> jax.Array:
    """[T] bool: o_t is an episode's first (after a `done`, and at t = 0)."""
    first = jnp.ones(self.done.shape[:-1] + (1,), bool)
    return jnp.concatenate([first, self.done[..., :-1]], axis=-1)

  def history(self) -> base.History:
    """The rollout as a source history (record=True), for model_inputs."""
    return base.History(
      obs=self.obs,
      action=self.action,
      reward=self.reward,
      episode_start=self.episode_start,
    )

  def episode_returns(self, num_episodes: int) -> jax.Array:
    """[T] -> [E] (`episode_returns`); episodes end with `done`."""
    return episode_returns(
      self.reward,
      self.episode_start,
      num_episodes,
      last_done=self.done[-1],
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
  `record`, the rollout also keeps observations, env states and why
  episodes ended (GIFs, tests); evaluation leaves them out to save memory.
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
        terminated=terminated if record else None,
        truncated=truncated if record else None,
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


def stateless_policy(choose: Callable) -> Policy:
  """A memoryless policy from `choose(key, env_state, task) -> action`."""

  def act(params, key, memory, step, env_state, task):
    del params, step
    return choose(key, env_state, task), memory

  return Policy(init=lambda params, step: (), act=act)


def random_policy(num_actions: int) -> Policy:
  """Uniform over the actions."""
  return stateless_policy(
    lambda key, env_state, task: jax.random.randint(key, (), 0, num_actions)
  )


def oracle_policy(env) -> Policy:
  """The env's optimal policy (`env.optimal_action`)."""
  return stateless_policy(
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
  total = num_prompt_episodes + num_episodes
  num_steps = total * episode_length(task_template)
  inner = make_policy_rollout(env, policy, num_steps, record=record)

  def rollout(key, params, task, epsilon):
    return inner(key, (jnp.asarray(epsilon, jnp.float32), params), task)

  return rollout


def episode_returns(
  reward_T,
  episode_start_T,
  num_episodes: int,
  *,
  last_done=True,
  max_length: int | None = None,
  length=None,
) -> jax.Array:
  """Return of each of the first `num_episodes` episodes of one stream [E].

  Episodes count from their starts over the first `length` steps (all with
  None) and can end early (dark_room_hard, key-to-door). Each ended where
  the next one started; the last one if `last_done` (a rollout's final
  `done`) or if it ran `max_length` steps (a stream has no `done`). Episodes
  that did not end, or never started, are NaN.
  """
  num_steps = reward_T.shape[-1]
  valid_T = jnp.arange(num_steps) < (num_steps if length is None else length)
  # Steps past `length` go to an extra segment that is dropped.
  episode_T = jnp.where(valid_T, jnp.cumsum(episode_start_T) - 1, num_episodes)
  reward_T = jnp.where(valid_T, reward_T.astype(jnp.float32), 0.0)
  returns_E = jax.ops.segment_sum(reward_T, episode_T, num_episodes + 1)
  steps_E = jax.ops.segment_sum(valid_T.astype(int), episode_T, num_episodes)
  returns_E = returns_E[:num_episodes]
  num_started = jnp.sum(episode_start_T & valid_T)
  last_ended = last_done
  if max_length is not None:
    last_ended = jnp.logical_or(last_done, steps_E >= max_length)
  index_E = jnp.arange(num_episodes)
  ended_E = (index_E < num_started - 1) | (
    (index_E == num_started - 1) & last_ended
  )
  return jnp.where(ended_E, returns_E, jnp.nan)


def stream_episode_returns(
  history: base.History,
  num_episodes: int,
  max_length: int | None = None,
  length=None,
) -> jax.Array:
  """Returns of the first episodes of one source stream [T] -> [E].

  A stream has no `done`: an episode counts as ended when another starts
  after it or it ran the full `max_length` (with None, the last one always
  counts); the others (and missing ones) are NaN. `length`: valid steps.
  """
  return episode_returns(
    history.reward,
    history.episode_start,
    num_episodes,
    last_done=max_length is None,
    max_length=max_length,
    length=length,
  )
