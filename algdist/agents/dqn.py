"""DQN: the paper's source algorithm for Watermaze (distributed, 16 actors).

One learner owns a Q-network, a target network and a replay buffer on the
device; its H actors act epsilon-greedily with the learner's current Q-network
and, after every `train_every` env steps each, the learner takes one Adam step
on a uniform minibatch from the buffer (Huber loss on n-step targets, double
DQN optional). Each actor's steps form one stream of the history.

The buffer keeps one frame per transition: slot s holds the H observations
acted on at one env step, so the next observation of slot s is slot s + 1's
(after a `done` the env has auto-reset, but the target then does not
bootstrap, so that is harmless). This halves replay memory for pixels.

Shape letters: see the glossary in algdist/__init__.py (H actors, T env
steps of one iteration, B minibatch).
"""

from __future__ import annotations

import dataclasses
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import struct

from algdist.agents import base, networks


@dataclasses.dataclass(frozen=True)
class Config:
  num_actors: int = 16  # actors (= history streams) sharing one learner
  # Env steps per actor: T, the history's length. The history keeps every
  # frame: 16 actors x 6000 x 20.7 KB = 2 GB per Watermaze learner.
  num_steps: int = 6000
  train_every: int = 2  # env steps per actor between gradient steps
  # Replay capacity in transitions over all actors (a multiple of num_actors).
  # Memory per learner ~ buffer_size x frame bytes: 4096 x 20.7 KB (72x96x3
  # uint8 Watermaze frames) = 85 MB; 10k would be 207 MB, too much to vmap
  # many learners on one host.
  buffer_size: int = 4096
  learning_starts: int = 1024  # transitions in the buffer before learning
  batch_size: int = 64  # transitions per gradient step
  learning_rate: float = 1e-3  # Adam step size
  adam_eps: float = 1.5e-4  # Adam epsilon
  max_grad_norm: float = 10.0  # global gradient-norm clip
  discount: float = 0.99  # gamma
  n_step: int = 3  # rewards summed before bootstrapping (1: plain DQN)
  double_dqn: bool = True  # online net picks, target net values the action
  target_update_every: int = 500  # gradient steps between target updates
  # Target update: target <- tau * online + (1 - tau) * target; 1.0 copies.
  target_tau: float = 1.0
  eps_start: float = 1.0  # exploration probability at step 0
  eps_end: float = 0.1  # exploration probability after the decay
  eps_decay_fraction: float = 0.5  # of num_steps over which eps falls
  conv_features: tuple[int, ...] = (16, 32, 32)  # channels per conv layer
  # Side (pixels of its input) of each conv layer's square, non-overlapping
  # patches: kernel = stride. 72x96 -> 18x24 -> 9x12 -> 3x4.
  patch_sizes: tuple[int, ...] = (4, 2, 3)
  hidden: tuple[int, ...] = (256,)  # MLP widths before the Q head

  @property
  def num_iterations(self) -> int:
    return self.num_steps // self.train_every


# Checked on CPU with 2 Watermaze tasks: platform visits per episode rose
# from ~0.15 (random) to 2.75 in one run and to 0.84, still rising, in the
# other. On 8 Dark Room tasks the last episodes reach ~0.9 of the optimal
# return (eps_end = 0.1 keeps exploring).
CONFIGS = {'dqn': Config()}


def _flat_normal(scale: float):
  """Variance-scaling (fan-in) normal init, drawn flat and then reshaped.

  XLA:CPU compiles a random draw of a rank-4 conv kernel shape several
  seconds slower than the same draw as a vector.
  """

  def init(key, shape, dtype=jnp.float32):
    std = math.sqrt(scale / math.prod(shape[:-1]))
    flat = jax.random.normal(key, (math.prod(shape),), dtype)
    return (std * flat).reshape(shape)

  return init


def patchify(x_BxO: jax.Array, k: int) -> jax.Array:
  """[B, height, width, C] -> [B, height/k, width/k, k*k*C]: non-overlapping
  k x k patches.

  Rows and columns that do not fill a whole patch are dropped; k shrinks to
  fit images smaller than one patch.
  """
  b, h, w, c = x_BxO.shape
  k = min(k, h, w)
  h, w = h // k, w // k
  x = x_BxO[:, : h * k, : w * k].reshape(b, h, k, w, k, c)
  return x.transpose(0, 1, 3, 2, 4, 5).reshape(b, h, w, k * k * c)


class QNetwork(nn.Module):
  """Patch convs for images [B, H, W, C] (uint8 scaled to [0, 1]), then MLP.

  Each conv layer has kernel = stride (a Dense on non-overlapping patches).
  XLA:CPU runs the backward pass of general strided convs inside a loop (a
  scan body, as here) as a naive loop, ~13x slower than at top level; patch
  convs are reshapes and matmuls in both directions. Vectors [B, I] skip the
  convs: they arrive already encoded by `networks.obs_encoder` (grid cells as
  one-hot codes).
  """

  num_actions: int
  conv_features: tuple[int, ...]
  patch_sizes: tuple[int, ...]
  hidden: tuple[int, ...]

  @nn.compact
  def __call__(self, x):
    hidden_init = _flat_normal(2.0)  # He: the layers feed ReLUs
    if x.ndim == 4:
      scale = 1.0 / 255.0 if x.dtype == jnp.uint8 else 1.0
      x = x.astype(jnp.float32) * scale
      for feat, k in zip(self.conv_features, self.patch_sizes, strict=True):
        x = nn.relu(nn.Dense(feat, kernel_init=hidden_init)(patchify(x, k)))
      x = x.reshape(x.shape[0], -1)
    for width in self.hidden:
      x = nn.relu(nn.Dense(width, kernel_init=hidden_init)(x))
    return nn.Dense(self.num_actions, kernel_init=_flat_normal(1.0))(x)


@struct.dataclass
class Replay:
  """Ring buffer of the last `slots` env steps of all H actors, time-major."""

  obs: jax.Array  # [slots, H, *O] in the env's dtype: the observation acted on
  action: jax.Array  # [slots, H] int32
  reward: jax.Array  # [slots, H] float32
  done: jax.Array  # [slots, H] bool: the episode ended with this step
  ptr: jax.Array  # () int32: the slot written next
  size: jax.Array  # () int32: slots written so far, at most S

  @classmethod
  def empty(cls, slots: int, obs_H: jax.Array) -> Replay:
    num_actors = obs_H.shape[0]
    return cls(
      obs=jnp.zeros((slots,) + obs_H.shape, obs_H.dtype),
      action=jnp.zeros((slots, num_actors), jnp.int32),
      reward=jnp.zeros((slots, num_actors), jnp.float32),
      done=jnp.zeros((slots, num_actors), bool),
      ptr=jnp.int32(0),
      size=jnp.int32(0),
    )

  def add(self, step: base.Step) -> Replay:
    """Writes one env step of all actors in place of the oldest slot."""
    put = lambda buf, x: jax.lax.dynamic_update_index_in_dim(
      buf, x, self.ptr, 0
    )
    slots = self.obs.shape[0]
    return Replay(
      obs=put(self.obs, step.obs),
      action=put(self.action, step.action),
      reward=put(self.reward, step.reward),
      done=put(self.done, step.done),
      ptr=(self.ptr + 1) % slots,
      size=jnp.minimum(self.size + 1, slots),
    )

  def sample(self, key, batch_size: int, n_step: int, discount: float):
    """Uniform n-step transitions: (obs, action, return, bootstrap, next_obs).

    `bootstrap` is discount^n, or 0 when the episode ended within the n
    steps. Only slots whose n successors are written can be drawn.
    """
    slots, num_actors = self.action.shape
    oldest = (self.ptr - self.size) % slots
    # One uniform draw for both indices: each random call costs compile time.
    u = jax.random.uniform(key, (2 * batch_size,))
    age = _uniform_int(u[:batch_size], self.size - n_step)
    actor = _uniform_int(u[batch_size:], num_actors)
    slot = (oldest + age) % slots
    ret = jnp.zeros((batch_size,), jnp.float32)
    alive = jnp.ones((batch_size,), jnp.float32)
    for j in range(n_step):
      later = (slot + j) % slots
      ret += alive * discount**j * self.reward[later, actor]
      alive *= 1.0 - self.done[later, actor].astype(jnp.float32)
    next_obs = self.obs[(slot + n_step) % slots, actor]
    return (
      self.obs[slot, actor],
      self.action[slot, actor],
      ret,
      alive * discount**n_step,
      next_obs,
    )


def _uniform_int(u, n):
  """Integers uniform in [0, n) from uniforms u in [0, 1)."""
  return jnp.minimum((u * n).astype(jnp.int32), n - 1)


@struct.dataclass
class LearnerState:
  params: dict  # online Q-network
  target_params: dict  # target Q-network
  opt_state: optax.OptState
  num_updates: jax.Array  # () int32: gradient steps taken
  replay: Replay
  actors: base.Actors


def _check(config: Config) -> None:
  """Raises ValueError naming any impossible field of `config`."""
  c = config
  slots = c.buffer_size // max(c.num_actors, 1)
  checks = [
    (c.num_actors >= 1, f'num_actors={c.num_actors}: must be >= 1.'),
    (c.train_every >= 1, f'train_every={c.train_every}: must be >= 1.'),
    (
      c.num_steps >= c.train_every and c.num_steps % c.train_every == 0,
      f'num_steps={c.num_steps}: must be a positive multiple of '
      f'train_every={c.train_every}.',
    ),
    (c.n_step >= 1, f'n_step={c.n_step}: must be >= 1.'),
    (
      c.buffer_size % c.num_actors == 0 and slots > c.n_step,
      f'buffer_size={c.buffer_size}: must be a multiple of num_actors='
      f'{c.num_actors} holding more than n_step={c.n_step} steps per actor.',
    ),
    (
      0 <= c.learning_starts <= c.buffer_size,
      f'learning_starts={c.learning_starts}: must be in [0, buffer_size='
      f'{c.buffer_size}].',
    ),
    (c.batch_size >= 1, f'batch_size={c.batch_size}: must be >= 1.'),
    (
      c.target_update_every >= 1,
      f'target_update_every={c.target_update_every}: must be >= 1.',
    ),
    (0 < c.target_tau <= 1, f'target_tau={c.target_tau}: must be in (0, 1].'),
    (
      0 <= c.eps_decay_fraction <= 1,
      f'eps_decay_fraction={c.eps_decay_fraction}: must be in [0, 1].',
    ),
    (
      len(c.patch_sizes) == len(c.conv_features)
      and all(k >= 1 for k in c.patch_sizes),
      f'patch_sizes={c.patch_sizes}: must be one size >= 1 per entry of '
      f'conv_features={c.conv_features}.',
    ),
  ]
  for ok, message in checks:
    if not ok:
      raise ValueError(message)


def make_train(config: Config, env):
  """`train(key, task_params) -> (LearnerState, History [A, num_steps])`."""
  _check(config)
  num_actors, every = config.num_actors, config.train_every
  slots = config.buffer_size // num_actors
  # The first iteration that learns: its acting has stored learning_starts
  # transitions, and n_step + 1 steps per actor so that one slot can be drawn.
  first_update = (
    max(
      -(-config.learning_starts // (num_actors * every)),
      -(-(config.n_step + 1) // every),
    )
    - 1
  )
  decay_steps = max(config.eps_decay_fraction * config.num_steps, 1.0)
  tx = optax.chain(
    optax.clip_by_global_norm(config.max_grad_norm),
    optax.adam(config.learning_rate, eps=config.adam_eps),
  )

  def epsilon(t):
    frac = jnp.minimum(t / decay_steps, 1.0)
    return config.eps_start + frac * (config.eps_end - config.eps_start)

  def train(key, task):
    if len(env.observation_space(task).shape) == 3:
      encode = lambda obs: obs  # the conv net scales pixels itself
    else:
      encode = networks.obs_encoder(env, task)
    num_actions = env.action_space(task).n
    net = QNetwork(
      num_actions, config.conv_features, config.patch_sizes, config.hidden
    )
    q_values = lambda p, obs: net.apply(p, encode(obs))
    key_init, key_reset, key_run = jax.random.split(key, 3)
    actors = base.reset_actors(env, task, key_reset, num_actors)
    params = net.init(key_init, encode(actors.obs[:1]))

    def loss_fn(params, obs, action, target):
      q = q_values(params, obs)
      q_taken = jnp.take_along_axis(q, action[:, None], -1)[:, 0]
      return optax.huber_loss(q_taken, target).mean()

    def _learn(nets, replay: Replay, key):
      """One gradient step; `nets` = (params, target, opt_state, updates)."""
      params, target_params, opt_state, num_updates = nets
      obs, action, ret, bootstrap, next_obs = replay.sample(
        key, config.batch_size, config.n_step, config.discount
      )
      q_next = q_values(target_params, next_obs)
      if config.double_dqn:
        best = jnp.argmax(q_values(params, next_obs), -1)
        v_next = jnp.take_along_axis(q_next, best[:, None], -1)[:, 0]
      else:
        v_next = q_next.max(-1)
      target = ret + bootstrap * v_next
      grads = jax.grad(loss_fn)(params, obs, action, target)
      updates, opt_state = tx.update(grads, opt_state, params)
      params = optax.apply_updates(params, updates)
      num_updates = num_updates + 1
      target_params = optax.periodic_update(
        optax.incremental_update(params, target_params, config.target_tau),
        target_params,
        num_updates,
        config.target_update_every,
      )
      return params, target_params, opt_state, num_updates

    def _env_step(carry, step_inputs):
      actors, replay, history, params = carry
      t, u_2xH, key_env = step_inputs
      greedy = jnp.argmax(q_values(params, actors.obs), -1)
      explore = u_2xH[0] < epsilon(t)
      action = jnp.where(explore, _uniform_int(u_2xH[1], num_actions), greedy)
      actors, step = base.step_actors(env, task, key_env, actors, action)
      # Written in place at [:, t]: stacking scan outputs [T, A] and then
      # transposing them to streams copies the history twice.
      history = jax.tree.map(
        lambda h, x: jax.lax.dynamic_update_index_in_dim(h, x, t, 1),
        history,
        step.history(),
      )
      return (actors, replay.add(step), history, params), None

    def _update_step(carry, i_and_key):
      state, history = carry
      i, key = i_and_key
      key_explore, key_env, key_learn = jax.random.split(key, 3)
      t_T = i * every + jnp.arange(every)
      # The K steps' exploration draws at once, outside the inner loop, and
      # flat: XLA:CPU compiles a draw of rank > 1 much more slowly.
      u_Tx2xH = jax.random.uniform(key_explore, (every * 2 * num_actors,))
      u_Tx2xH = u_Tx2xH.reshape(every, 2, num_actors)
      (actors, replay, history, _), _ = jax.lax.scan(
        _env_step,
        (state.actors, state.replay, history, state.params),
        (t_T, u_Tx2xH, jax.random.split(key_env, every)),
      )
      # `i` comes from the scan's xs, so it is the same for every learner
      # under vmap and the cond stays a branch instead of running both
      # sides; the replay buffer is only read inside, never copied out.
      nets = (
        state.params,
        state.target_params,
        state.opt_state,
        state.num_updates,
      )
      nets = jax.lax.cond(
        i >= first_update,
        lambda n: _learn(n, replay, key_learn),
        lambda n: n,
        nets,
      )
      params, target_params, opt_state, num_updates = nets
      state = LearnerState(
        params=params,
        target_params=target_params,
        opt_state=opt_state,
        num_updates=num_updates,
        replay=replay,
        actors=actors,
      )
      return (state, history), None

    state = LearnerState(
      params=params,
      target_params=params,
      opt_state=tx.init(params),
      num_updates=jnp.int32(0),
      replay=Replay.empty(slots, actors.obs),
      actors=actors,
    )
    steps = config.num_steps
    history = base.History(
      obs=jnp.zeros(
        (num_actors, steps) + actors.obs.shape[1:], actors.obs.dtype
      ),
      action=jnp.zeros((num_actors, steps), jnp.int32),
      reward=jnp.zeros((num_actors, steps), jnp.float32),
      episode_start=jnp.zeros((num_actors, steps), bool),
    )
    iters = config.num_iterations
    (state, history), _ = jax.lax.scan(
      _update_step,
      (state, history),
      (jnp.arange(iters), jax.random.split(key_run, iters)),
    )
    return state, history

  return train
