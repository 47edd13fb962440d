"""Rollout GIFs: the agent's view scaled beside the top-down map, the
episode's path on the map, and the caption under both."""

import inspect
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from algdist import agents, config_lib, envs, video
from algdist.envs import watermaze


def test_views_sit_side_by_side_with_the_view_scaled_and_a_caption(tmp_path):
  imageio = pytest.importorskip('imageio')
  # Frames differ from one another (GIF writers merge identical ones).
  first_person = np.broadcast_to(
    np.arange(5, dtype=np.uint8)[:, None, None, None] * 40, (5, 24, 32, 3)
  )
  top_down = np.full((5, 96, 96, 3), 200, np.uint8)
  texts = [f'episode 1  return {i}' for i in range(5)]
  path = video.rollout_gif(
    str(tmp_path / 'a.gif'), first_person, top_down, texts
  )
  frames = imageio.mimread(path)
  assert len(frames) == 5
  # 24x32 scaled 4x to the map's 96 rows; the caption bar below.
  assert frames[0].shape[:2] == (96 + video.CAPTION_HEIGHT, 128 + 96)
  assert frames[2][95, 127, 0] == 80 and frames[2][0, 130, 0] == 200
  bar = frames[0][96:]
  assert bar.max() > 200 and bar.min() < 10  # light text on black (GIF palette)


def test_captions_count_episodes_and_the_return_so_far():
  reward = [0, 1, 0, 1, 0, 0, 1]
  start = [1, 0, 0, 0, 1, 0, 0]
  assert video.captions(reward, start) == [
    'episode 1  return 0',
    'episode 1  return 1',
    'episode 1  return 1',
    'episode 1  return 2',
    'episode 2  return 0',
    'episode 2  return 0',
    'episode 2  return 1',
  ]


def test_the_map_draws_the_current_episodes_path_only():
  env, params = envs.make('watermaze')
  # Two episodes of three steps: far left, then far right of the arena.
  xs = jnp.array([-0.6, -0.5, -0.4, 0.4, 0.5, 0.6], jnp.float32)
  state = watermaze.EnvState(
    pos=jnp.stack([xs, jnp.zeros_like(xs)], -1),
    heading=jnp.full((6,), math.pi / 2, jnp.float32),
    time=jnp.zeros((6,), jnp.int32),
  )
  start = jnp.array([1, 0, 0, 1, 0, 0], bool)
  frames = video.top_down_frames(env, state, start, params)
  assert frames.shape == (6, 96, 96, 3)
  yellow = lambda img: np.all(img == np.array([230, 200, 40]), -1)
  # Pixel columns of x = -0.5 and x = +0.5 on the 96-pixel map.
  column = lambda x: int((x + 1.12) / (2.24 / 96))
  row = 48
  last = frames[-1]
  assert yellow(last)[row - 2 : row + 3, column(0.5)].any()
  assert not yellow(last)[:, : column(-0.3)].any()  # episode 1's path gone
  assert yellow(frames[2])[row - 2 : row + 3, column(-0.5)].any()


def test_a_pose_learner_has_a_gif_and_a_learner_without_states_none(tmp_path):
  imageio = pytest.importorskip('imageio')
  env, params = envs.make('watermaze', image_height=12, image_width=16)
  task = jax.tree.map(lambda x: x[0], env.tasks(params, 'test', num=1))
  learner = config_lib.source('rmax', num_steps=150, num_actors=2)
  path = str(tmp_path / 'source.gif')
  assert video.write_learner_gif(env, task, jax.random.key(0), path, learner)
  frames = imageio.mimread(path)
  assert len(frames) == 100  # two episodes of actor 0
  assert frames[0].shape[1] > 96  # the map beside the view
  dqn = config_lib.source('dqn', num_steps=50)
  other = str(tmp_path / 'dqn.gif')
  assert (
    video.write_learner_gif(env, task, jax.random.key(0), other, dqn) is None
  )


def test_the_learners_that_say_they_keep_states_take_record_state():
  env = envs.make('watermaze')[0]
  keeping = [n for n in agents.names() if agents.records_state(n)]
  assert sorted(keeping) == ['dyna_q', 'pose_search', 'rmax']
  for name in keeping:
    config, make_train = agents.get(name)
    parameters = inspect.signature(make_train(config, env)).parameters
    assert 'record_state' in parameters, name
