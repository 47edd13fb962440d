"""Dark Room and Dark Room Hard: find an unseen goal cell on a square grid.

The agent sees only its own (x, y) cell and must find the goal by exploring;
the goal is the task. Actions: 0 no-op, 1 up (y - 1), 2 down (y + 1),
3 left (x - 1), 4 right (x + 1); moves into a wall leave the agent in place.
Episodes start at the centre cell.

- `dark_room`: 9x9, 20 steps, +1 on every step that ends on the goal.
- `dark_room_hard`: 17x17, 20 steps, +1 once on reaching the goal, which ends
  the episode (terminated); otherwise it is truncated after 20 steps.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from gymnax.environments import spaces

from algdist.envs import base

# (dx, dy) for no-op, up, down, left, right.
MOVES = np.array([[0, 0], [0, -1], [0, 1], [-1, 0], [1, 0]], np.int32)


@struct.dataclass
class EnvState:
  pos: jax.Array  # (2,) int32: x, y
  time: jax.Array  # () int32: steps taken in this episode


@struct.dataclass
class EnvParams:
  goal: jax.Array = struct.field(
    default_factory=lambda: jnp.zeros((2,), jnp.int32)
  )  # (2,) int32 x, y: the task
  size: int = struct.field(pytree_node=False, default=9)  # cells per side
  max_steps_in_episode: int = struct.field(pytree_node=False, default=20)
  # True: +1 once on reaching the goal, which ends the episode (Hard).
  # False: +1 on every step that ends on the goal.
  terminate_on_goal: bool = struct.field(pytree_node=False, default=False)
  num_test_tasks: int = struct.field(pytree_node=False, default=16)
  split_seed: int = struct.field(pytree_node=False, default=0)


def grid_move(pos: jax.Array, action: jax.Array, size: int) -> jax.Array:
  """Moves (x, y) by `action`, staying inside a size x size grid."""
  return jnp.clip(pos + jnp.asarray(MOVES)[action], 0, size - 1)


def step_toward(pos: jax.Array, target: jax.Array) -> jax.Array:
  """The action of a shortest path from `pos` to `target`: x first, then y."""
  dx, dy = target[0] - pos[0], target[1] - pos[1]
  return jnp.select(
    [dx > 0, dx < 0, dy < 0, dy > 0], [4, 3, 1, 2], default=0
  ).astype(jnp.int32)


class DarkRoom(base.TaskFamily):
  """Dark Room (and, with `terminate_on_goal`, Dark Room Hard)."""

  def __init__(self, size: int = 9, terminate_on_goal: bool = False):
    super().__init__()
    self._defaults = EnvParams(
      size=size,
      terminate_on_goal=terminate_on_goal,
      num_test_tasks=16 if size <= 9 else 64,
    )

  @property
  def name(self) -> str:
    return 'dark_room_hard' if self._defaults.terminate_on_goal else 'dark_room'

  @property
  def default_params(self) -> EnvParams:
    return self._defaults

  @property
  def num_actions(self) -> int:
    return len(MOVES)

  def action_space(self, params=None) -> spaces.Discrete:
    return spaces.Discrete(len(MOVES))

  def observation_space(self, params: EnvParams) -> spaces.Box:
    return spaces.Box(0, params.size - 1, (2,), jnp.int32)

  def reset_env(self, key, params: EnvParams):
    c = params.size // 2
    state = EnvState(pos=jnp.array([c, c], jnp.int32), time=jnp.int32(0))
    return state.pos, state

  def step_env(self, key, state: EnvState, action, params: EnvParams):
    pos = grid_move(state.pos, action, params.size)
    on_goal = jnp.all(pos == params.goal)
    state = EnvState(pos=pos, time=state.time + 1)
    reward = on_goal.astype(jnp.float32)
    terminated = on_goal if params.terminate_on_goal else jnp.bool_(False)
    return pos, state, reward, terminated, {}

  def optimal_action(self, state: EnvState, params: EnvParams) -> jax.Array:
    return step_toward(state.pos, params.goal)

  def validate(self, params: EnvParams) -> None:
    base.require(params.size >= 2, f'size={params.size}: must be >= 2.')
    base.require(
      params.max_steps_in_episode >= 1,
      f'max_steps_in_episode={params.max_steps_in_episode}: must be >= 1.',
    )
    goal = np.asarray(params.goal)
    base.require(
      goal.shape[-1:] == (2,)
      and bool(np.all((goal >= 0) & (goal < params.size))),
      f'goal={goal.tolist()}: must be an (x, y) cell inside the '
      f'{params.size}x{params.size} grid.',
    )
    base.split_task_ids(
      params.size**2, params.num_test_tasks, params.split_seed
    )

  def tasks(self, params: EnvParams, split, num=None, seed=0) -> EnvParams:
    base.check_split(split)
    ids = base.split_task_ids(
      params.size**2, params.num_test_tasks, params.split_seed
    )[split]
    ids = base.choose_ids(ids, num, seed)
    goals = np.stack([ids % params.size, ids // params.size], -1)
    return base.batch_replace(params, goal=goals.astype(np.int32))

  def optimal_return(self, params: EnvParams) -> jax.Array:
    """From the centre: walk the Manhattan distance d, then stay."""
    c = params.size // 2
    d = jnp.abs(params.goal - c).sum(-1)
    if params.terminate_on_goal:
      return (d <= params.max_steps_in_episode).astype(jnp.float32)
    # Steps d, d + 1, ..., T end on the goal; with d = 0 all T of them do.
    horizon = params.max_steps_in_episode
    steps_on_goal = jnp.minimum(horizon - d + 1, horizon)
    return jnp.maximum(steps_on_goal, 0).astype(jnp.float32)
