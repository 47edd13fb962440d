"""Transitions -> model inputs: the one definition of what a token holds.

Training windows and evaluation rollouts both build their inputs here, so the
two cannot drift apart. Step t of a stream is one model input holding o_t and
what came just before it: a_{t-1}, r_{t-1}, and whether o_t starts an
episode. The model's target at step t is a_t (or, for a history that records
one, the action the learner meant to take there: base.History.target).

The token of step t depends only on transitions up to t, never on where a
training window starts: that is what makes the evaluation KV cache exact.
a_{t-1} and r_{t-1} are kept across episode boundaries (episode_start marks
the boundary): the reward of an episode's last step is information the
in-context learner needs. Only a stream's very first step has no previous
step; it gets the action index `no_action(num_actions)`, which is
`num_actions` (so action embeddings have num_actions + 1 rows), and reward 0.

Arrays may be numpy (host-side input pipelines stay on the host) or JAX
(under jit); the result has the same kind.

Shape letters: see algdist/__init__.py. A stream's steps run along T; a
model input's along L.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from algdist.agents import base


def no_action(num_actions: int) -> int:
  """The previous-action index of a step with no previous step."""
  return num_actions


@struct.dataclass
class Steps:
  """Per-step model inputs; leaves are [..., L, ...] ([...] for one step)."""

  obs: jax.Array  # [..., L, *O] o_t in the env's dtype (pixels stay uint8)
  prev_action: jax.Array  # [..., L] int32 a_{t-1}; num_actions where none
  prev_reward: jax.Array  # [..., L] float32 r_{t-1}; 0 where none
  episode_start: jax.Array  # [..., L] bool: o_t is an episode's first


def _xp(*arrays):
  """numpy when every input is a host array, else jax.numpy."""
  if any(isinstance(x, jax.Array) for x in arrays):
    return jnp
  return np


def make_step(obs, prev_action, prev_reward, episode_start) -> Steps:
  """The model input of one step (or of many, stacked along any axes)."""
  xp = _xp(obs, prev_action, prev_reward, episode_start)
  return Steps(
    obs=xp.asarray(obs),
    prev_action=xp.asarray(prev_action).astype(xp.int32),
    prev_reward=xp.asarray(prev_reward).astype(xp.float32),
    episode_start=xp.asarray(episode_start).astype(bool),
  )


def model_inputs(
  history: base.History, num_actions: int
) -> tuple[Steps, jax.Array]:
  """History [..., T] -> (Steps [..., T], target actions [..., T] int32).

  Each leading index of the history is one stream, its steps in order along
  the axis right after the leading ones; the first step of each stream has
  no previous action or reward.
  """
  action_T = history.action
  xp = _xp(history.obs, action_T, history.reward, history.episode_start)
  action_T = xp.asarray(action_T).astype(xp.int32)
  reward_T = xp.asarray(history.reward).astype(xp.float32)
  first = action_T.shape[:-1] + (1,)
  prev_action_T = xp.concatenate(
    [xp.full(first, no_action(num_actions), xp.int32), action_T[..., :-1]],
    axis=-1,
  )
  prev_reward_T = xp.concatenate(
    [xp.zeros(first, xp.float32), reward_T[..., :-1]], axis=-1
  )
  steps = make_step(
    history.obs, prev_action_T, prev_reward_T, history.episode_start
  )
  if history.target is not None:
    return steps, xp.asarray(history.target).astype(xp.int32)
  return steps, action_T
