"""What every source algorithm shares: the history record and acting in envs.

A source algorithm is a factory `make_train(config, env) -> train` with
`train(key, task_params) -> (final_state, history)`: one learner's whole
learning run on one task, a `lax.scan`, so that
`jax.jit(jax.vmap(jax.vmap(train)))` runs tasks x learners in one call.
A learner has H actors (A3C-style) that share its parameters; each actor's
steps, in order, form one stream of the `History` it returns.

Shape letters: see the glossary in algdist/__init__.py. A learner's
H actors each write one history of T steps.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct


@struct.dataclass
class History:
  """What a learner did while learning; leaves are [..., H, T, ...]."""

  obs: jax.Array  # [..., T, *O] the observation the action was taken on
  action: jax.Array  # [..., T] int32
  reward: jax.Array  # [..., T] float32, paid for that action
  episode_start: jax.Array  # [..., T] bool: obs is an episode's first
  # [..., T] int32: the action to imitate where it is not the one taken (a
  # learner that perturbs its own actions records what it meant to do, so
  # the model learns to recover from a slip without learning to slip: see
  # coverage.Config.imitate); None: imitate `action`.
  target: jax.Array | None = None
  # [..., T] leaves: the env state each obs was rendered from, kept by a
  # learner that acts from it when its train is called with record_state
  # (rollout videos of the source; never in datasets); else None.
  state: object | None = None


@struct.dataclass
class Actors:
  """H environments stepped together, each with its own task copy."""

  env_state: object  # the env's state pytree, leaves [H, ...]
  obs: jax.Array  # [H, *O] the observation to act on next
  episode_start: jax.Array  # [H] bool: `obs` is an episode's first


@struct.dataclass
class Step:
  """One step of H actors, with what learners need beyond the history."""

  obs: jax.Array  # [H, *O]
  action: jax.Array  # [H] int32
  reward: jax.Array  # [H] float32
  episode_start: jax.Array  # [H] bool
  done: jax.Array  # [H] bool: the episode ended with this step
  terminated: jax.Array  # [H] bool: it ended in a terminal state (not time)
  next_obs: jax.Array  # [H, *O] after auto-reset when done

  def history(self) -> History:
    return History(
      obs=self.obs,
      action=self.action,
      reward=self.reward,
      episode_start=self.episode_start,
    )


def reset_actors(env, params, key: jax.Array, num_actors: int) -> Actors:
  """Starts `num_actors` episodes of the task in `params`."""
  keys = jax.random.split(key, num_actors)
  obs, env_state = jax.vmap(env.reset, in_axes=(0, None))(keys, params)
  return Actors(
    env_state=env_state,
    obs=obs,
    episode_start=jnp.ones((num_actors,), bool),
  )


def step_actors(env, params, key: jax.Array, actors: Actors, action):
  """Steps every actor once; gymnax auto-resets finished episodes.

  Separate from algdist.rollout's scan, where a policy acts inside one env.

  `done` is terminated or truncated: every task here is episodic with a fixed
  horizon that ends the return, so learners treat both as terminal unless
  they choose to bootstrap through truncation (`terminated` alone).
  """
  keys = jax.random.split(key, action.shape[0])
  next_obs, env_state, reward, terminated, truncated, _ = jax.vmap(
    env.step, in_axes=(0, 0, 0, None)
  )(keys, actors.env_state, action, params)
  done = terminated | truncated
  step = Step(
    obs=actors.obs,
    action=action.astype(jnp.int32),
    reward=reward.astype(jnp.float32),
    episode_start=actors.episode_start,
    done=done,
    terminated=terminated,
    next_obs=next_obs,
  )
  return Actors(env_state=env_state, obs=next_obs, episode_start=done), step


def require_env(env, env_class: type, learner: str) -> None:
  """Raises ValueError unless `env` is an `env_class`: for a learner that
  reads that env's state (e.g. the agent's pose), which other envs lack."""
  if not isinstance(env, env_class):
    wanted = env_class.__name__
    raise ValueError(
      f'The {learner} learner acts from the state of {wanted} and needs the '
      f'{wanted.lower()} env; got {type(env).__name__}.'
    )


# What a history asks the model to imitate (a learner's `imitate` setting):
# the action taken, or the one the learner planned where a slip replaced it.
IMITATE = ('taken', 'planned')


def check_imitate(imitate: str) -> None:
  if imitate not in IMITATE:
    raise ValueError(f"imitate='{imitate}': must be one of {IMITATE}.")


def slip(key_explore, key_random, planned, epsilon: float, num_actions: int):
  """`planned` [H] with each action replaced, with probability `epsilon`,
  by a uniform random one (an epsilon-greedy actor's slips)."""
  random = jax.random.randint(key_random, planned.shape, 0, num_actions)
  explore = jax.random.uniform(key_explore, planned.shape) < epsilon
  return jnp.where(explore, random, planned)


def record(step: Step, planned, imitate: str, state=None) -> History:
  """The history of `step`, asking for `planned` where `imitate` says so,
  with the env `state` its obs was rendered from when one is given."""
  history = step.history().replace(state=state)
  return history.replace(target=planned) if imitate == 'planned' else history


def stream_major(history: History) -> History:
  """[T, H, ...] as scans stack it -> [H, T, ...], one stream per actor."""
  return jax.tree.map(lambda x: jnp.swapaxes(x, 0, 1), history)
