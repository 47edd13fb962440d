"""Watermaze's pictures: the agent's first-person view and a map for people.

The first-person view is the observation: one ray per image column meets
the ring wall analytically (no engine), and the wall's 8 cue sectors are
what lets the agent infer where it is. The top-down map is drawn only for
people (GIFs, docs), never shown to the agent.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

# Wall cue hue of each 45-degree sector, counter-clockwise from +x. Every
# hue has a channel at 255, so brightness scaling keeps it recognisable.
SECTOR_COLOURS = np.array(
  [
    [255, 32, 32],  # 0 red
    [255, 140, 0],  # 1 orange
    [255, 255, 0],  # 2 yellow
    [0, 255, 64],  # 3 green
    [0, 255, 255],  # 4 cyan
    [40, 80, 255],  # 5 blue
    [150, 40, 255],  # 6 purple
    [255, 0, 200],  # 7 magenta
  ],
  np.float32,
)
NUM_SECTORS = len(SECTOR_COLOURS)
CEILING_COLOUR = (176, 176, 176)
FLOOR_COLOUR = (88, 88, 88)
# Wall brightness falls linearly across a sector from 1 to 1 - this.
SECTOR_GRADIENT = 0.35
# Wall brightness falls linearly with distance, by this much at 2 radii.
DISTANCE_SHADE = 0.25


def focal(params) -> float:
  """Focal length in pixels (square pixels)."""
  return 0.5 * params.image_width / math.tan(math.radians(params.fov) / 2)


def render_first_person(
  pos: jax.Array, heading: jax.Array, params
) -> jax.Array:
  """The agent's (H, W, 3) uint8 view from `pos` facing `heading`.

  One ray per column meets the ring wall analytically. Rays are
  d = forward + u * right, so the ray parameter t is the perpendicular
  (fisheye-free) distance. The wall spans rows within focal * half wall
  height / t of the horizon; ceiling above, floor below.
  """
  h, w = params.image_height, params.image_width
  radius = params.arena_radius
  # Static per-column camera-plane offsets and per-row distances from the
  # horizon, in pixels.
  u = ((np.arange(w) + 0.5) / w * 2 - 1) * math.tan(
    math.radians(params.fov) / 2
  )
  u = jnp.asarray(u, jnp.float32)
  row_off = jnp.asarray(np.abs(np.arange(h) + 0.5 - h / 2), jnp.float32)
  background = np.where(
    (np.arange(h) < h / 2)[:, None],
    np.array(CEILING_COLOUR + (0,), np.uint8),
    np.array(FLOOR_COLOUR + (0,), np.uint8),
  )
  background = jax.lax.bitcast_convert_type(
    jnp.asarray(background), jnp.uint32
  )  # (H,) packed ceiling / floor colour per row

  cos, sin = jnp.cos(heading), jnp.sin(heading)
  dx = cos + u * sin
  dy = sin - u * cos
  a = 1 + u * u
  b = pos[0] * dx + pos[1] * dy
  c = pos[0] * pos[0] + pos[1] * pos[1] - radius * radius
  t = (jnp.sqrt(jnp.maximum(b * b - a * c, 0.0)) - b) / a
  hit_x = pos[0] + t * dx
  hit_y = pos[1] + t * dy
  sector_pos = jnp.arctan2(hit_y, hit_x) * (NUM_SECTORS / (2 * math.pi))
  sector_pos = jnp.where(sector_pos < 0, sector_pos + NUM_SECTORS, sector_pos)
  sector = jnp.clip(sector_pos.astype(jnp.int32), 0, NUM_SECTORS - 1)
  across = sector_pos - sector
  shade = (1 - SECTOR_GRADIENT * across) * (
    1 - DISTANCE_SHADE * jnp.minimum(t / (2 * radius), 1.0)
  )
  # Per-column colour from the 8-entry table (a gather per column, not per
  # pixel), packed with a pad byte into one uint32 so that the per-pixel
  # select below moves 4 bytes at once.
  wall = jnp.asarray(SECTOR_COLOURS)[sector] * shade[:, None]
  wall = jnp.round(wall).astype(jnp.uint8)  # (W, 3)
  wall = jnp.concatenate([wall, jnp.zeros((w, 1), jnp.uint8)], -1)
  wall = jax.lax.bitcast_convert_type(wall, jnp.uint32)  # (W,)
  half = focal(params) * (0.5 * params.wall_height) / jnp.maximum(t, 1e-6)
  # Without the barrier XLA fuses the per-column math into the per-pixel
  # loop and redoes it for every row.
  wall, half = jax.lax.optimization_barrier((wall, half))
  is_wall = row_off[:, None] < half[None, :]  # (H, W)
  img = jnp.where(is_wall, wall[None, :], background[:, None])
  return jax.lax.bitcast_convert_type(img, jnp.uint8)[..., :3]


@functools.partial(jax.jit, static_argnames=('size',))
def render_top_down(state, params, trail=None, size: int = 96) -> jax.Array:
  """A (size, size, 3) uint8 map for people: cue rim, platform, agent.

  The arena floor is grey with its wall cues as a coloured rim; the platform
  (invisible to the agent) is white; the agent is a black disk with a line
  along its heading; `trail`, (positions [T, 2], shown [T] bool), marks
  where it has been in yellow. North (+y) is up.
  """
  radius = params.arena_radius
  half_extent = 1.12 * radius
  px = 2 * half_extent / size  # arena units per pixel
  coords = (jnp.arange(size) + 0.5) * px - half_extent
  x = coords[None, :]
  y = -coords[:, None]
  dist = jnp.sqrt(x * x + y * y)
  sector_pos = jnp.arctan2(y, x) * (NUM_SECTORS / (2 * math.pi))
  sector_pos = jnp.where(sector_pos < 0, sector_pos + NUM_SECTORS, sector_pos)
  sector = jnp.clip(sector_pos.astype(jnp.int32), 0, NUM_SECTORS - 1)
  shade = 1 - SECTOR_GRADIENT * (sector_pos - sector)
  rim = jnp.asarray(SECTOR_COLOURS)[sector] * shade[..., None]
  img = jnp.full((size, size, 3), 24.0)
  img = jnp.where((dist <= radius)[..., None], FLOOR_COLOUR[0], img)
  is_rim = (dist > radius) & (dist <= radius + max(0.08 * radius, 2 * px))
  img = jnp.where(is_rim[..., None], rim, img)
  to_platform = (x - params.platform[0]) ** 2 + (y - params.platform[1]) ** 2
  img = jnp.where(
    (to_platform <= params.platform_radius**2)[..., None], 240.0, img
  )
  if trail is not None:
    positions, shown = trail
    near = (x[..., None] - positions[:, 0]) ** 2 + (
      y[..., None] - positions[:, 1]
    ) ** 2 <= (1.5 * px) ** 2
    on_trail = jnp.any(near & shown, -1)
    img = jnp.where(on_trail[..., None], jnp.array([230.0, 200.0, 40.0]), img)
  rel_x = x - state.pos[0]
  rel_y = y - state.pos[1]
  body = max(params.body_radius, 1.5 * px)
  along = rel_x * jnp.cos(state.heading) + rel_y * jnp.sin(state.heading)
  across = -rel_x * jnp.sin(state.heading) + rel_y * jnp.cos(state.heading)
  is_agent = (rel_x**2 + rel_y**2 <= body**2) | (
    (along >= 0) & (along <= 3 * body) & (jnp.abs(across) <= px)
  )
  img = jnp.where(is_agent[..., None], 0.0, img)
  return jnp.round(img).astype(jnp.uint8)
