"""Watermaze: find an invisible platform in a round arena from pixels.

A JAX stand-in for DeepMind Lab's `rooms_watermaze` (the Morris water maze),
which runs on a C++ engine and so cannot be jitted or vmapped. The agent sees
a first-person RGB view (72x96, as in DMLab) of an open circular arena whose
wall carries distal cues, and must find a hidden platform; the platform's
2-D position is the task.

The same as DMLab: first-person RGB pixels only, an invisible platform, +1
on reaching it, after which the agent respawns at a random pose and the
episode goes on, so a good agent learns where the platform is and returns to
it from anywhere using the wall cues.

Different from DMLab: a flat raycast render of one ring wall (8 angular
sectors, each its own hue with a brightness gradient across the sector; grey
ceiling and floor; no textures, lighting, or other objects); discrete
actions that move, strafe and turn by fixed amounts rather than DMLab's
engine-driven look and move; nothing happens on the platform but +1 and an
immediate respawn (no visual feedback, no pause); episodes last a fixed
number of agent steps (50) rather than a time limit; and platform positions
form a task set split into disjoint train and test lattice cells. The
rendering is in watermaze_render.py.

Geometry: x to the right, y up; heading in radians counter-clockwise from +x.
Actions: 0 forward, 1 backward, 2 strafe left, 3 strafe right, 4 turn left,
5 turn right, 6 forward + turn left, 7 forward + turn right. Turns apply
first, so actions 6 and 7 move along the new heading.
"""

from __future__ import annotations

import functools
import math
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from gymnax.environments import spaces

from algdist.envs import base, watermaze_render

# (forward, left, turn) multiples of step_size, step_size and turn_size.
ACTIONS = np.array(
  [
    [1, 0, 0],  # 0 forward
    [-1, 0, 0],  # 1 backward
    [0, 1, 0],  # 2 strafe left
    [0, -1, 0],  # 3 strafe right
    [0, 0, 1],  # 4 turn left
    [0, 0, -1],  # 5 turn right
    [1, 0, 1],  # 6 forward + turn left
    [1, 0, -1],  # 7 forward + turn right
  ],
  np.float32,
)

# Candidate poses drawn per (re)spawn; the first one off the platform wins.
NUM_SPAWN_CANDIDATES = 8
# Cells are sampled this fraction of their side away from their edges, so
# float32 rounding cannot move a platform into a neighbouring cell.
CELL_MARGIN = 0.01


@struct.dataclass
class EnvState:
  pos: jax.Array  # (2,) float32 x, y (arena units)
  heading: jax.Array  # () float32 radians, counter-clockwise from +x
  time: jax.Array  # () int32: steps taken in this episode


@struct.dataclass
class EnvParams:
  platform: jax.Array = struct.field(
    default_factory=lambda: jnp.array([0.4, 0.3], jnp.float32)
  )  # (2,) float32 x, y of the platform centre (arena units): the task
  # Radius of the circular arena (arena units, the unit of length here).
  arena_radius: float = struct.field(pytree_node=False, default=1.0)
  # Hidden platform's radius (arena units): +1 within it of its centre.
  platform_radius: float = struct.field(pytree_node=False, default=0.15)
  # Agent's body radius (arena units): it stays within arena - body radius.
  body_radius: float = struct.field(pytree_node=False, default=0.05)
  # Distance of a move or strafe (arena units).
  step_size: float = struct.field(pytree_node=False, default=0.1)
  turn_size: float = struct.field(pytree_node=False, default=30.0)  # degrees
  # Wall height (arena units); the camera sits at half of it.
  wall_height: float = struct.field(pytree_node=False, default=0.7)
  # Horizontal field of view (degrees).
  fov: float = struct.field(pytree_node=False, default=90.0)
  image_height: int = struct.field(pytree_node=False, default=72)  # pixels
  image_width: int = struct.field(pytree_node=False, default=96)  # pixels
  # Episode length (agent steps); truncated, never terminated.
  max_steps_in_episode: int = struct.field(pytree_node=False, default=50)
  # Side of the square lattice cells that split platforms (arena units).
  cell_size: float = struct.field(pytree_node=False, default=0.2)
  # Lattice cells held out for the test split (count, of 44 by default).
  num_test_cells: int = struct.field(pytree_node=False, default=8)
  split_seed: int = struct.field(pytree_node=False, default=0)  # integer seed


def task_cells(params: EnvParams) -> np.ndarray:
  """(C, 2) lower-left corners of the lattice cells platforms are drawn in.

  The lattice has a corner at the origin; a cell is kept when it lies wholly
  inside the disk of radius arena_radius - platform_radius, so that every
  platform drawn in it fits inside the arena.
  """
  reach = params.arena_radius - params.platform_radius
  c = params.cell_size
  k = math.ceil(reach / c)
  lo = np.arange(-k, k, dtype=np.float64) * c
  x0, y0 = np.meshgrid(lo, lo, indexing='xy')
  far_x = np.maximum(np.abs(x0), np.abs(x0 + c))
  far_y = np.maximum(np.abs(y0), np.abs(y0 + c))
  inside = far_x**2 + far_y**2 <= reach**2
  return np.stack([x0[inside], y0[inside]], -1)


def cell_index(platform, params: EnvParams) -> np.ndarray:
  """Index into `task_cells(params)` of the cell holding each platform."""
  corners = task_cells(params)
  p = np.asarray(platform, np.float64)
  ij = np.floor(p / params.cell_size).astype(np.int64)
  ij_cells = np.round(corners / params.cell_size).astype(np.int64)
  match = np.all(ij[..., None, :] == ij_cells, -1)
  return np.where(match.any(-1), match.argmax(-1), -1)


def _sample_pose(key: jax.Array, params: EnvParams):
  """A uniform pose off the platform: first valid of a few candidates.

  If all candidates land on the platform (rare), falls back to the arena
  point farthest from it, which `validate` guarantees is off the platform.
  """
  k = NUM_SPAWN_CANDIDATES
  reach = params.arena_radius - params.body_radius
  r_key, a_key, h_key = jax.random.split(key, 3)
  r = reach * jnp.sqrt(jax.random.uniform(r_key, (k,)))
  ang = jax.random.uniform(a_key, (k,), minval=0.0, maxval=2 * math.pi)
  cand = jnp.stack([r * jnp.cos(ang), r * jnp.sin(ang)], -1)
  off = jnp.sum((cand - params.platform) ** 2, -1) > params.platform_radius**2
  norm = jnp.linalg.norm(params.platform)
  away = jnp.where(
    norm > 0,
    -params.platform / jnp.maximum(norm, 1e-12),
    jnp.array([1.0, 0.0]),
  )
  pos = jnp.where(off.any(), cand[jnp.argmax(off)], reach * away)
  heading = jax.random.uniform(h_key, (), minval=-math.pi, maxval=math.pi)
  return pos.astype(jnp.float32), heading.astype(jnp.float32)


def move(pos, heading, action, params: EnvParams):
  """(pos, heading) after `action` from (pos, heading), before any respawn:
  the turn first, then the move along the new heading, then the wall."""
  fwd, left, turn = jnp.asarray(ACTIONS)[action]
  heading = heading + turn * math.radians(params.turn_size)
  heading = jnp.mod(heading + math.pi, 2 * math.pi) - math.pi
  cos, sin = jnp.cos(heading), jnp.sin(heading)
  pos = pos + params.step_size * jnp.stack(
    [fwd * cos - left * sin, fwd * sin + left * cos]
  )
  reach = params.arena_radius - params.body_radius
  norm = jnp.linalg.norm(pos)
  pos = pos * jnp.minimum(1.0, reach / jnp.maximum(norm, 1e-12))
  return pos, heading


class Watermaze(base.TaskFamily):
  """Morris-water-maze family: the task is the hidden platform's position.

  `step` is overridden so that each step renders once, from the state after
  the auto-reset select; gymnax's base `step` renders twice (the stepped and
  the reset observation) and selects one. Same return signature as gymnax,
  but info has only 'terminated' and 'truncated': no 'final_observation',
  because it would be a second render per step (doubling the cost of the
  environment) for an observation needed only to bootstrap values at
  time-limit truncation. Callers that need it can call `step_env`, which
  returns the pre-reset observation.
  """

  def __init__(self, **overrides):
    super().__init__()
    self._defaults = EnvParams(**overrides)

  @property
  def name(self) -> str:
    return 'watermaze'

  @property
  def default_params(self) -> EnvParams:
    return self._defaults

  @property
  def num_actions(self) -> int:
    return len(ACTIONS)

  def action_space(self, params=None) -> spaces.Discrete:
    return spaces.Discrete(len(ACTIONS))

  def observation_space(self, params: EnvParams) -> spaces.Box:
    shape = (params.image_height, params.image_width, 3)
    return spaces.Box(0, 255, shape, jnp.uint8)

  def get_obs(self, state: EnvState, params=None, key=None) -> jax.Array:
    params = self.default_params if params is None else params
    return watermaze_render.render_first_person(
      state.pos, state.heading, params
    )

  def render_top_down(
    self, state: EnvState, params: EnvParams, trail=None
  ) -> jax.Array:
    """A (96, 96, 3) uint8 map of the arena for people (rollout GIFs), with
    `trail` = (earlier states [T], shown [T] bool) drawn as a path."""
    if trail is not None:
      trail = (trail[0].pos, trail[1])
    return watermaze_render.render_top_down(state, params, trail)

  def pose_views(self, key, num: int, params: EnvParams):
    """`num` views from uniform poses in the arena, and each pose as
    (x, y, cos heading, sin heading): frames [num, H, W, 3] uint8 and
    targets [num, 4] float32, for pretraining a pixel encoder to localise
    (algdist/encoder.py). The pose is the agent's, which AD never sees."""
    reach = params.arena_radius - params.body_radius
    r_key, a_key, h_key = jax.random.split(key, 3)
    r = reach * jnp.sqrt(jax.random.uniform(r_key, (num,)))
    angle = jax.random.uniform(a_key, (num,), maxval=2 * math.pi)
    heading = jax.random.uniform(h_key, (num,), minval=-math.pi, maxval=math.pi)
    pos = jnp.stack([r * jnp.cos(angle), r * jnp.sin(angle)], -1)
    frames = jax.vmap(watermaze_render.render_first_person, (0, 0, None))(
      pos, heading, params
    )
    targets = jnp.concatenate(
      [pos, jnp.stack([jnp.cos(heading), jnp.sin(heading)], -1)], -1
    )
    return frames, targets.astype(jnp.float32)

  def reset_env(self, key, params: EnvParams):
    pos, heading = _sample_pose(key, params)
    state = EnvState(pos=pos, heading=heading, time=jnp.int32(0))
    return self.get_obs(state, params), state

  def _transition(self, key, state: EnvState, action, params: EnvParams):
    """Moves the agent; on the platform, pays +1 and respawns it."""
    pos, heading = move(state.pos, state.heading, action, params)
    on_platform = (
      jnp.sum((pos - params.platform) ** 2) <= params.platform_radius**2
    )
    spawn_pos, spawn_heading = _sample_pose(key, params)
    state = EnvState(
      pos=jnp.where(on_platform, spawn_pos, pos).astype(jnp.float32),
      heading=jnp.where(on_platform, spawn_heading, heading).astype(
        jnp.float32
      ),
      time=state.time + 1,
    )
    return state, on_platform.astype(jnp.float32)

  def step_env(self, key, state: EnvState, action, params: EnvParams):
    state, reward = self._transition(key, state, action, params)
    return self.get_obs(state, params), state, reward, jnp.bool_(False), {}

  @functools.partial(jax.jit, static_argnames=('self',))
  def step(self, key, state: EnvState, action, params=None):
    """gymnax `step` (auto-reset on done) that renders once per step."""
    if params is None:
      params = self.default_params
    key_step, key_reset = jax.random.split(key)
    state_st, reward = self._transition(key_step, state, action, params)
    terminated = jnp.bool_(False)
    truncated = self.is_truncated(state_st, params)
    done = jnp.logical_or(terminated, truncated)
    pos_re, heading_re = _sample_pose(key_reset, params)
    state_re = EnvState(pos=pos_re, heading=heading_re, time=jnp.int32(0))
    state = jax.tree.map(
      lambda x, y: jax.lax.select(done, x, y), state_re, state_st
    )
    obs = self.get_obs(state, params)
    info = {'terminated': terminated, 'truncated': truncated}
    return obs, state, reward, terminated, truncated, info

  def validate(self, params: EnvParams) -> None:
    base.require(
      params.arena_radius > 0,
      f'arena_radius={params.arena_radius}: must be > 0.',
    )
    base.require(
      0 <= params.body_radius < params.arena_radius,
      f'body_radius={params.body_radius}: must be in [0, arena_radius).',
    )
    reach = params.arena_radius - params.body_radius
    base.require(
      0 < params.platform_radius <= reach / 2,
      f'platform_radius={params.platform_radius}: must be in '
      f'(0, (arena_radius - body_radius) / 2 = {reach / 2}].',
    )
    platform = np.asarray(params.platform, np.float64)
    base.require(
      platform.shape[-1:] == (2,)
      and bool(
        np.all(
          np.linalg.norm(platform, axis=-1) + params.platform_radius
          <= params.arena_radius * (1 + 1e-6)
        )
      ),
      f'platform={platform.tolist()}: must be an (x, y) centre with '
      f'|platform| + platform_radius <= arena_radius.',
    )
    base.require(
      0 < params.step_size < params.arena_radius,
      f'step_size={params.step_size}: must be in (0, arena_radius).',
    )
    base.require(
      0 < params.turn_size <= 180,
      f'turn_size={params.turn_size}: must be in (0, 180] degrees.',
    )
    base.require(
      params.wall_height > 0,
      f'wall_height={params.wall_height}: must be > 0.',
    )
    base.require(
      0 < params.fov < 180,
      f'fov={params.fov}: must be in (0, 180) degrees.',
    )
    base.require(
      params.image_height >= 1,
      f'image_height={params.image_height}: must be >= 1.',
    )
    base.require(
      params.image_width >= 1,
      f'image_width={params.image_width}: must be >= 1.',
    )
    base.require(
      params.max_steps_in_episode >= 1,
      f'max_steps_in_episode={params.max_steps_in_episode}: must be >= 1.',
    )
    base.require(
      0 < params.cell_size,
      f'cell_size={params.cell_size}: must be > 0.',
    )
    num_cells = len(task_cells(params))
    base.require(
      0 < params.num_test_cells < num_cells,
      f'num_test_cells={params.num_test_cells}: must be in '
      f'[1, {num_cells - 1}] for {num_cells} cells of cell_size='
      f'{params.cell_size}.',
    )

  def tasks(self, params: EnvParams, split, num=None, seed=0) -> EnvParams:
    """`num` platforms, each uniform inside a cell of `split`.

    Cells of the lattice from `task_cells` go to train or test by
    `params.split_seed`, so the two sets of positions are disjoint.
    """
    base.check_split(split)
    base.require(
      num is not None,
      'num=None: watermaze tasks are continuous positions; pass num.',
    )
    cells = task_cells(params)
    ids = base.split_task_ids(
      len(cells), params.num_test_cells, params.split_seed
    )[split]
    ids = base.choose_ids(ids, num, seed)
    rng = np.random.default_rng(
      [params.split_seed, seed, base.SPLITS.index(split)]
    )
    frac = rng.uniform(CELL_MARGIN, 1 - CELL_MARGIN, (len(ids), 2))
    platforms = cells[ids] + params.cell_size * frac
    return base.batch_replace(params, platform=platforms.astype(np.float32))


def _upscale(img: np.ndarray, factor: int) -> np.ndarray:
  return np.repeat(np.repeat(img, factor, 0), factor, 1)


def save_example_frames(directory: str) -> None:
  """Writes watermaze_first_person.png and watermaze_top_down.png."""
  from matplotlib import image as mpl_image

  env = Watermaze()
  params = env.default_params
  state = EnvState(
    pos=jnp.array([-0.35, -0.25], jnp.float32),
    heading=jnp.float32(math.radians(50.0)),
    time=jnp.int32(0),
  )
  first_person = np.asarray(env.get_obs(state, params))
  top_down = np.asarray(env.render_top_down(state, params))
  os.makedirs(directory, exist_ok=True)
  mpl_image.imsave(
    os.path.join(directory, 'watermaze_first_person.png'),
    _upscale(first_person, 4),
  )
  mpl_image.imsave(
    os.path.join(directory, 'watermaze_top_down.png'), _upscale(top_down, 4)
  )


if __name__ == '__main__':
  save_example_frames(sys.argv[1] if len(sys.argv) > 1 else 'docs/images')
