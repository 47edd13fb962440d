"""PPO and A2C: on-policy actor-critic learners with H actors per learner.

The paper's source for the Dark tasks is A3C with 100 actors; A2C is its
synchronous form, and here it is the same code as PPO with one epoch over one
minibatch (the clipped objective then equals the policy gradient, since the
probability ratio is exactly 1). Every update collects `rollout_len` steps
from each of the learner's H actors, which share its parameters; each actor's
steps form one stream of the history.

Shape letters: see the glossary in algdist/__init__.py.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import struct

from algdist.agents import base, networks


@dataclasses.dataclass(frozen=True)
class Config:
  num_actors: int = 16  # actors (= history streams) sharing one learner
  rollout_len: int = 20  # env steps per actor between updates
  num_updates: int = 100  # updates per learning run
  hidden: tuple[int, ...] = (64, 64)  # MLP widths of the shared torso
  learning_rate: float = 5e-3  # Adam step size (the start, when annealed)
  # Anneal the step size linearly to 0 over the run: late updates then
  # polish a learned policy instead of knocking it off the goal.
  anneal_learning_rate: bool = False
  adam_eps: float = 1e-6  # Adam epsilon (the paper's A3C setting)
  max_grad_norm: float = 0.5  # global gradient-norm clip
  discount: float = 0.99  # gamma
  gae_lambda: float = 0.95  # lambda of generalised advantage estimation
  entropy_coef: float = 0.01  # weight of the entropy bonus
  value_coef: float = 0.5  # weight of the value loss
  clip_eps: float = 0.2  # PPO ratio clip; irrelevant for one epoch
  num_epochs: int = 4  # passes over each rollout
  num_minibatches: int = 4  # minibatches per pass
  # Off by default: with no reward seen yet, normalising blows noise up to
  # unit scale and the policy collapses before it finds the goal.
  normalize_advantages: bool = False  # per minibatch, to unit scale
  # The networks also see the return collected so far in the episode (a
  # float): one number of memory. On Key-to-Door it says whether the key is
  # held, which the (x, y) observation does not; a memoryless policy must
  # then act the same on a cell before and after the key, and stalls below
  # the optimum.
  observe_episode_return: bool = False

  @property
  def steps_per_stream(self) -> int:
    return self.num_updates * self.rollout_len


# A2C at 3e-3 for 200 updates: on 32 Dark Room goals (16 actors each) every
# stream's last 10 episodes reached >= 90% of optimal (two seeds); at 1e-3
# for 300 updates 2 of 16 learners fell short.
CONFIGS = {
  'ppo': Config(),
  'a2c': Config(
    num_epochs=1, num_minibatches=1, learning_rate=3e-3, num_updates=200
  ),
}


def _check(config: Config) -> None:
  """Raises ValueError naming any impossible field of `config`."""
  c = config
  checks = [
    (c.num_actors >= 1, f'num_actors={c.num_actors}: must be >= 1.'),
    (c.rollout_len >= 1, f'rollout_len={c.rollout_len}: must be >= 1.'),
    (c.num_updates >= 1, f'num_updates={c.num_updates}: must be >= 1.'),
    (c.num_epochs >= 1, f'num_epochs={c.num_epochs}: must be >= 1.'),
    (
      c.num_minibatches >= 1
      and (c.num_actors * c.rollout_len) % c.num_minibatches == 0,
      f'num_minibatches={c.num_minibatches}: must be >= 1 and divide '
      f'num_actors * rollout_len = {c.num_actors * c.rollout_len}.',
    ),
    (
      len(c.hidden) >= 1 and all(w >= 1 for w in c.hidden),
      f'hidden={c.hidden}: must be one or more widths >= 1.',
    ),
    (c.learning_rate > 0, f'learning_rate={c.learning_rate}: must be > 0.'),
    (0 <= c.discount <= 1, f'discount={c.discount}: must be in [0, 1].'),
    (0 <= c.gae_lambda <= 1, f'gae_lambda={c.gae_lambda}: must be in [0, 1].'),
    (c.clip_eps > 0, f'clip_eps={c.clip_eps}: must be > 0.'),
    (
      c.max_grad_norm > 0,
      f'max_grad_norm={c.max_grad_norm}: must be > 0.',
    ),
  ]
  for ok, message in checks:
    if not ok:
      raise ValueError(message)


class ActorCritic(nn.Module):
  """An MLP torso with a policy head and a value head."""

  num_actions: int
  hidden: tuple[int, ...]

  @nn.compact
  def __call__(self, x_BxI):
    for width in self.hidden:
      x_BxI = nn.tanh(nn.Dense(width)(x_BxI))
    logits_BxA = nn.Dense(
      self.num_actions, kernel_init=nn.initializers.orthogonal(0.01)
    )(x_BxI)
    value_B = nn.Dense(1, kernel_init=nn.initializers.orthogonal(1.0))(x_BxI)
    return logits_BxA, value_B[..., 0]


@struct.dataclass
class LearnerState:
  params: dict
  opt_state: optax.OptState


def gae(reward_TxH, value_TxH, done_TxH, last_value_H, discount, lam):
  """Generalised advantages and value targets, computed backwards in time."""

  def _backward_step(next_adv_value, step):
    next_adv, next_value = next_adv_value
    reward, value, done = step
    nonterminal = 1.0 - done.astype(jnp.float32)
    delta = reward + discount * next_value * nonterminal - value
    adv = delta + discount * lam * nonterminal * next_adv
    return (adv, value), adv

  _, adv_TxH = jax.lax.scan(
    _backward_step,
    (jnp.zeros_like(last_value_H), last_value_H),
    (reward_TxH, value_TxH, done_TxH),
    reverse=True,
  )
  return adv_TxH, adv_TxH + value_TxH


def make_train(config: Config, env):
  """`train(key, task_params) -> (LearnerState, History [A, U*R])`."""
  _check(config)
  batch = config.num_actors * config.rollout_len
  learning_rate = config.learning_rate
  if config.anneal_learning_rate:
    learning_rate = optax.linear_schedule(
      config.learning_rate,
      0.0,
      config.num_updates * config.num_epochs * config.num_minibatches,
    )
  tx = optax.chain(
    optax.clip_by_global_norm(config.max_grad_norm),
    optax.adam(learning_rate, eps=config.adam_eps),
  )

  def train(key, task):
    encode = networks.obs_encoder(env, task)
    net = ActorCritic(env.action_space(task).n, config.hidden)
    key_init, key_reset, key_run = jax.random.split(key, 3)
    actors = base.reset_actors(env, task, key_reset, config.num_actors)

    def features(obs, ep_return):
      x = encode(obs)
      if config.observe_episode_return:
        x = jnp.concatenate([x, ep_return[:, None]], -1)
      return x

    ep_return = jnp.zeros((config.num_actors,), jnp.float32)
    params = net.init(key_init, features(actors.obs, ep_return))
    policy = lambda p, obs, ep_ret: net.apply(p, features(obs, ep_ret))

    def loss_fn(params, mb):
      logits, value = policy(params, mb['obs'], mb['ep_return'])
      logp_all = jax.nn.log_softmax(logits)
      logp = jnp.take_along_axis(logp_all, mb['action'][:, None], -1)[:, 0]
      ratio = jnp.exp(logp - mb['logp'])
      adv = mb['adv']
      if config.normalize_advantages:
        adv = (adv - adv.mean()) / (adv.std() + 1e-8)
      clipped = jnp.clip(ratio, 1 - config.clip_eps, 1 + config.clip_eps)
      policy_loss = -jnp.minimum(ratio * adv, clipped * adv).mean()
      value_loss = 0.5 * jnp.square(value - mb['target']).mean()
      entropy = -(jnp.exp(logp_all) * logp_all).sum(-1).mean()
      return (
        policy_loss
        + config.value_coef * value_loss
        - config.entropy_coef * entropy
      )

    def _minibatch_step(state, mb):
      grads = jax.grad(loss_fn)(state.params, mb)
      updates, opt_state = tx.update(grads, state.opt_state, state.params)
      params = optax.apply_updates(state.params, updates)
      return LearnerState(params, opt_state), None

    def _epoch_step(state_data, key):
      state, data = state_data
      order = jax.random.permutation(key, batch)
      shuffled = jax.tree.map(
        lambda x: x[order].reshape((config.num_minibatches, -1) + x.shape[1:]),
        data,
      )
      state, _ = jax.lax.scan(_minibatch_step, state, shuffled)
      return (state, data), None

    def _env_step(actors_and_return, key_and_params):
      actors, ep_ret = actors_and_return
      key, params = key_and_params
      key_act, key_env = jax.random.split(key)
      logits, value = policy(params, actors.obs, ep_ret)
      action = jax.random.categorical(key_act, logits)
      logp = jax.nn.log_softmax(logits)[jnp.arange(action.shape[0]), action]
      actors, step = base.step_actors(env, task, key_env, actors, action)
      next_ret = jnp.where(step.done, 0.0, ep_ret + step.reward)
      return (actors, next_ret), (step, ep_ret, logp, value)

    def _update_step(carry, key):
      state, actors, ep_ret = carry
      key_roll, key_epochs = jax.random.split(key)
      keys = jax.random.split(key_roll, config.rollout_len)
      (actors, ep_ret), (steps, ep_ret_TxH, logp, value) = jax.lax.scan(
        lambda a, k: _env_step(a, (k, state.params)), (actors, ep_ret), keys
      )
      _, last_value = policy(state.params, actors.obs, ep_ret)
      adv, target = gae(
        steps.reward,
        value,
        steps.done,
        last_value,
        config.discount,
        config.gae_lambda,
      )
      flat = lambda x: x.reshape((batch,) + x.shape[2:])
      data = dict(
        obs=flat(steps.obs),
        ep_return=flat(ep_ret_TxH),
        action=flat(steps.action),
        logp=flat(logp),
        adv=flat(adv),
        target=flat(target),
      )
      (state, _), _ = jax.lax.scan(
        _epoch_step,
        (state, data),
        jax.random.split(key_epochs, config.num_epochs),
      )
      return (state, actors, ep_ret), steps.history()

    state = LearnerState(params, tx.init(params))
    (state, _, _), history_UxTxH = jax.lax.scan(
      _update_step,
      (state, actors, ep_return),
      jax.random.split(key_run, config.num_updates),
    )
    # [U, R, A, ...] -> [A, U * R, ...]: one stream per actor, in time order.
    history = jax.tree.map(
      lambda x: x.reshape((-1,) + x.shape[2:]), history_UxTxH
    )
    return state, base.stream_major(history)

  return train
