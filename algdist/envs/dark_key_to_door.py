"""Dark Key-to-Door: find an unseen key, then an unseen door, on a 9x9 grid.

The agent sees only its (x, y) cell; a task is a (key, door) pair of distinct
cells. Each episode starts on a random cell that is not the key. Stepping onto
the key pays +1 once and picks it up; stepping onto the door with the key pays
+1 and ends the episode (terminated); otherwise it is truncated after 50 steps.
Actions as in Dark Room: 0 no-op, 1 up, 2 down, 3 left, 4 right.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from gymnax.environments import spaces

from algdist.envs import base
from algdist.envs.dark_room import MOVES, grid_move, step_toward


@struct.dataclass
class EnvState:
  pos: jax.Array  # (2,) int32: x, y
  has_key: jax.Array  # () bool
  time: jax.Array  # () int32: steps taken in this episode


@struct.dataclass
class EnvParams:
  key_pos: jax.Array = struct.field(
    default_factory=lambda: jnp.array([0, 0], jnp.int32)
  )  # (2,) int32 x, y of the key: half of the task
  door_pos: jax.Array = struct.field(
    default_factory=lambda: jnp.array([1, 0], jnp.int32)
  )  # (2,) int32 x, y of the door: the other half
  size: int = struct.field(pytree_node=False, default=9)  # cells per side
  max_steps_in_episode: int = struct.field(pytree_node=False, default=50)
  num_test_tasks: int = struct.field(pytree_node=False, default=1000)
  split_seed: int = struct.field(pytree_node=False, default=0)


class DarkKeyToDoor(base.TaskFamily):
  """Dark Key-to-Door."""

  @property
  def name(self) -> str:
    return 'dark_key_to_door'

  @property
  def default_params(self) -> EnvParams:
    return EnvParams()

  @property
  def num_actions(self) -> int:
    return len(MOVES)

  def action_space(self, params=None) -> spaces.Discrete:
    return spaces.Discrete(len(MOVES))

  def observation_space(self, params: EnvParams) -> spaces.Box:
    return spaces.Box(0, params.size - 1, (2,), jnp.int32)

  def reset_env(self, key, params: EnvParams):
    # A uniform cell among the size^2 - 1 that are not the key.
    n = params.size**2
    key_id = params.key_pos[0] + params.key_pos[1] * params.size
    cell = jax.random.randint(key, (), 0, n - 1)
    cell = cell + (cell >= key_id)
    pos = jnp.stack([cell % params.size, cell // params.size]).astype(jnp.int32)
    state = EnvState(pos=pos, has_key=jnp.bool_(False), time=jnp.int32(0))
    return pos, state

  def step_env(self, key, state: EnvState, action, params: EnvParams):
    pos = grid_move(state.pos, action, params.size)
    got_key = ~state.has_key & jnp.all(pos == params.key_pos)
    has_key = state.has_key | got_key
    at_door = state.has_key & jnp.all(pos == params.door_pos)
    reward = got_key.astype(jnp.float32) + at_door.astype(jnp.float32)
    state = EnvState(pos=pos, has_key=has_key, time=state.time + 1)
    return pos, state, reward, at_door, {}

  def optimal_action(self, state: EnvState, params: EnvParams) -> jax.Array:
    target = jnp.where(state.has_key, params.door_pos, params.key_pos)
    return step_toward(state.pos, target)

  def validate(self, params: EnvParams) -> None:
    base.require(params.size >= 2, f'size={params.size}: must be >= 2.')
    base.require(
      params.max_steps_in_episode >= 1,
      f'max_steps_in_episode={params.max_steps_in_episode}: must be >= 1.',
    )
    for field in ('key_pos', 'door_pos'):
      cell = np.asarray(getattr(params, field))
      base.require(
        cell.shape[-1:] == (2,)
        and bool(np.all((cell >= 0) & (cell < params.size))),
        f'{field}={cell.tolist()}: must be an (x, y) cell inside the '
        f'{params.size}x{params.size} grid.',
      )
    base.require(
      not np.any(
        np.all(np.asarray(params.key_pos) == np.asarray(params.door_pos), -1)
      ),
      'key_pos and door_pos must be distinct cells.',
    )
    n = params.size**2
    base.split_task_ids(n * (n - 1), params.num_test_tasks, params.split_seed)

  def tasks(self, params: EnvParams, split, num=None, seed=0) -> EnvParams:
    base.check_split(split)
    n = params.size**2
    # Task id t: key cell t // (n - 1), door the (t % (n - 1))-th other cell.
    ids = base.split_task_ids(
      n * (n - 1), params.num_test_tasks, params.split_seed
    )[split]
    ids = base.choose_ids(ids, num, seed)
    key_cell = ids // (n - 1)
    door_cell = ids % (n - 1)
    door_cell = door_cell + (door_cell >= key_cell)
    to_xy = lambda c: np.stack([c % params.size, c // params.size], -1)
    return base.batch_replace(
      params,
      key_pos=to_xy(key_cell).astype(np.int32),
      door_pos=to_xy(door_cell).astype(np.int32),
    )

  def optimal_return(self, params: EnvParams) -> jax.Array:
    """Expected over random starts: 2 when key then door fit in the episode."""
    n = params.size
    xs, ys = jnp.meshgrid(jnp.arange(n), jnp.arange(n), indexing='ij')
    starts = jnp.stack([xs.ravel(), ys.ravel()], -1)  # (n*n, 2)
    key = params.key_pos[..., None, :]
    door = params.door_pos[..., None, :]
    to_key = jnp.abs(starts - key).sum(-1)
    to_door = jnp.abs(door - key).sum(-1)
    horizon = params.max_steps_in_episode
    ret = (to_key <= horizon).astype(jnp.float32) + (
      to_key + to_door <= horizon
    ).astype(jnp.float32)
    not_key = jnp.any(starts != key, -1)
    return (ret * not_key).sum(-1) / not_key.sum(-1)
