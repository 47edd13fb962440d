"""Rollout videos of pixel tasks: the agent's view beside a top-down map.

`write_rollout_gif` runs the frozen model on one task and writes a GIF
whose frames show what the model saw (scaled up), the env's top-down map
with the path of the current episode, and a caption with the episode and
its return so far. `write_learner_gif` does the same for a source learner
learning from scratch, where the learner can keep its env states.
"""

from __future__ import annotations

import functools
import logging
import os

import jax
import jax.numpy as jnp
import numpy as np

from algdist import agents, rollout

CAPTION_HEIGHT = 14  # pixels of the caption bar under each frame


def captions(reward_T, episode_start_T) -> list[str]:
  """'episode k  return r' per step, the return paid so far in the episode
  (including the step's own reward)."""
  texts, episode, paid = [], 0, 0.0
  pairs = zip(np.asarray(reward_T), np.asarray(episode_start_T), strict=True)
  for reward, start in pairs:
    if start:
      episode, paid = episode + 1, 0.0
    paid += float(reward)
    texts.append(f'episode {episode}  return {paid:g}')
  return texts


def _caption_bar(text: str, width: int) -> np.ndarray:
  """A [CAPTION_HEIGHT, width, 3] uint8 bar with `text` in white."""
  from PIL import Image, ImageDraw  # noqa: PLC0415  (matplotlib needs PIL)

  bar = Image.new('RGB', (width, CAPTION_HEIGHT))
  ImageDraw.Draw(bar).text((2, 1), text, fill=(255, 255, 255))
  return np.asarray(bar)


def rollout_gif(
  path: str,
  first_person_TxO,
  top_down_TxVxVx3=None,
  captions_T=None,
  fps: int = 10,
):
  """Writes a GIF of a pixel rollout: the agent's view (scaled up by a
  whole factor to the map's height), the top-down map beside it when given,
  and each frame's caption below. Returns the path, or None without
  imageio."""
  try:
    import imageio  # noqa: PLC0415
  except ImportError:
    logging.warning('imageio is not installed: no GIF written to %s.', path)
    return None
  view = np.asarray(first_person_TxO, np.uint8)
  frames = [view]
  if top_down_TxVxVx3 is not None:
    top = np.asarray(top_down_TxVxVx3, np.uint8)
    factor = max(1, top.shape[1] // view.shape[1])
    frames = [view.repeat(factor, 1).repeat(factor, 2), top]
  height = max(f.shape[1] for f in frames)
  # Pad to a common height (black below), then place side by side.
  frames = [
    np.pad(f, ((0, 0), (0, height - f.shape[1]), (0, 0), (0, 0)))
    for f in frames
  ]
  video_TxO = np.concatenate(frames, axis=2)
  if captions_T is not None:
    width = video_TxO.shape[2]
    bars = np.stack([_caption_bar(t, width) for t in captions_T])
    video_TxO = np.concatenate([video_TxO, bars], axis=1)
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  # duration: milliseconds per frame (imageio's pillow plugin); loop forever.
  imageio.mimsave(path, list(video_TxO), duration=1000 / fps, loop=0)
  return path


def top_down_frames(env, env_state_T, episode_start_T, task) -> np.ndarray:
  """[T, S, S, 3] the env's top-down map at each step, with the path of the
  current episode so far."""
  return np.asarray(_top_down(env, env_state_T, episode_start_T, task))


# Jitted once per env and shapes: every GIF of an evaluation shares it.
@functools.partial(jax.jit, static_argnums=0)
def _top_down(env, env_state_T, episode_start_T, task):
  episode_T = jnp.cumsum(episode_start_T)
  steps = jnp.arange(episode_T.shape[0])

  def draw(t):
    state = jax.tree.map(lambda x: x[t], env_state_T)
    shown = (episode_T == episode_T[t]) & (steps <= t)
    return env.render_top_down(state, task, trail=(env_state_T, shown))

  return jax.vmap(draw)(steps)


def write_rollout_gif(
  env, task, key, path: str, policy, params, num_episodes: int = 2
) -> str | None:
  """A GIF of one rollout of `policy` (a rollout.Policy: the model's, or
  random) on one task of a pixel env: the agent's view, the env's top-down
  map beside it where it draws one (its `render_top_down`), episode and
  return below. Returns the path, or None (logged) without imageio.
  """
  num_steps = num_episodes * rollout.episode_length(task)
  run = rollout.make_policy_rollout(env, policy, num_steps, record=True)
  out = jax.device_get(jax.jit(run)(key, params, task))
  return _gif(env, task, path, out, out.env_state)


def write_learner_gif(
  env, task, key, path: str, learner, num_episodes: int = 2
) -> str | None:
  """A GIF of the first episodes of a source learner (a config section:
  `algorithm` and `config`) learning from scratch on one task, its actor
  0's stream, as `write_rollout_gif` draws a policy's. Only a learner whose
  train can keep its env states (`record_state`: the pose learners of
  Watermaze, `agents.records_state`) has one; others return None
  (logged)."""
  if not agents.records_state(learner.algorithm):
    logging.info('%s keeps no env states: no GIF.', learner.algorithm)
    return None
  config, make_train = agents.get(learner.algorithm, **learner.config.to_dict())
  train = functools.partial(make_train(config, env), record_state=True)
  _, history = jax.jit(train)(key, task)
  num_steps = num_episodes * rollout.episode_length(task)
  out = jax.device_get(jax.tree.map(lambda x: x[0, :num_steps], history))
  return _gif(env, task, path, out, out.state)


def _gif(env, task, path: str, stream, env_state_T) -> str | None:
  """The GIF of a recorded stream (obs, reward, episode_start [T]):
  views, the map where the env draws one (gymnax envs do not), captions."""
  top_down = None
  if getattr(env, 'render_top_down', None) is not None:
    top_down = top_down_frames(env, env_state_T, stream.episode_start, task)
  return rollout_gif(
    path,
    np.asarray(stream.obs),
    top_down,
    captions(stream.reward, stream.episode_start),
  )
