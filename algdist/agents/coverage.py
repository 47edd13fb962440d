"""Systematic exploration on a grid: sweep unvisited cells, then exploit.

A learner for the dark grid worlds that knows nothing of the task but what
its rewards tell it. An episode pays at one cell (Dark Room's goal) or at
two in order (Key-to-Door's key, then door): K stages. For each stage the
learner remembers, across episodes, every cell it has entered during that
stage. Until a step of the current stage has paid it walks to the nearest
cell it has not entered in this stage (Manhattan distance, ties to the
lowest x * size + y: from Dark Room's centre the first sweep runs to the
left wall), so each episode extends the explored region; once
a step of the stage has paid, it walks the shortest path to that cell in
every later episode. Its first episodes explore and its later ones exploit:
a learning history whose improvement, like a learner's, comes only from
experience.

Why it exists: AD-epsilon's random-walk exploration cannot find a goal on
Dark Room Hard's 17x17 grid within 20 steps (about 4% of episodes), so AD
distilled from it never learns to search; this learner finds every Hard
goal within 18 episodes. Because ties break the same way on every task,
from a fixed start its search is one fixed sequence of paths until the goal
shows up, and the previous episode's path in context tells the model which
comes next.

With `order='snake'` it walks instead to the first unvisited cell in a
fixed row-by-row order, so that where it will search next depends only on
how far along that order it has come. With `epsilon` > 0 an actor takes a
uniform random action with that probability (its memory still records
where it went, and it plans its next step from there). With
`imitate='planned'` as well, the history records the action the learner
planned as the one to imitate (base.History.target) wherever a random one
was taken: the histories then show the way back from a slip, with no slip
to copy (the idea of DART, Laskey et al. 2017: noise in the demonstrator's
actions, not in its labels).

With `exploit='retrace'` (Dark Room, whose episodes all start at the
centre) it goes back to a found goal by replaying the actions of the
episode that found it, rather than by a shortest path: each later episode
is then a copy of an episode already in the context. With `frames` > 1 its
actors read the tie-breaking order in different symmetries of the grid, so
that one goal turns up at different episodes of different actors' searches.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
from flax import struct

from algdist.agents import base
from algdist.envs import dark_key_to_door, dark_room


@dataclasses.dataclass(frozen=True)
class Config:
  """One sweeping learner's whole history."""

  num_steps: int = 1200  # env steps per stream (T)
  num_actors: int = 1  # streams, each with its own memory and env copy
  epsilon: float = 0.0  # probability of a uniform random action per step
  # Which unvisited cell to walk to: 'nearest' (Manhattan distance from
  # where the actor stands) or 'snake' (the first in a fixed boustrophedon
  # order: row by row, alternating direction), whose search state is one
  # frontier cell rather than a whole map of visited cells.
  order: str = 'nearest'
  # The action the history asks the model to imitate at each step: 'taken'
  # (the action taken, random or not) or 'planned' (the learner's own
  # choice, also where epsilon replaced it; recorded as History.target).
  # On Dark Room Hard 'planned' beat 'taken' under noise (45% against 38%)
  # but not the noiseless source (69%): RESULTS.md.
  imitate: str = 'taken'
  # How many of the grid's 8 symmetries (rotations, reflections) frame the
  # search orders of a learner's actors: actor a searches in frame a % frames
  # (ties among equally near cells, or the snake's rows, read in that frame).
  # 1: one fixed search on every task. More frames make the same goal turn
  # up at other episodes and from other sides: more distinct examples of
  # the step AD finds hardest, returning to a goal just found (on Dark Room
  # Hard that did not help: 58% against 69%, RESULTS.md).
  frames: int = 1
  # How it goes back to a cell that paid: 'shortest' (a shortest path from
  # wherever it stands) or 'retrace' (the actions of the episode in which
  # the cell first paid, replayed step by step: the same route, since Dark
  # Room's episodes all start at the centre). A replay is a copy of an
  # episode in the context, which AD imitates far more reliably than a
  # path it must plan to a cell it has seen pay once.
  exploit: str = 'shortest'


CONFIGS = {'coverage': Config()}
# Each actor keeps its own memory: a stream's episode is one episode of
# experience, however many actors run beside it (algdist.agents).
POOLS_ACTORS = False
ORDERS = ('nearest', 'snake')
EXPLOITS = ('shortest', 'retrace')


@struct.dataclass
class Memory:
  """What one actor knows, per stage k of an episode."""

  visited: jax.Array  # [stages, G, G] bool, [k, x, y]: entered in stage k
  known: jax.Array  # [stages] bool: a step of stage k has paid
  target: jax.Array  # [stages, 2] int32: the cell that paid in stage k
  stage: jax.Array  # () int32: the current episode's stage
  frame: jax.Array  # () int32: the grid symmetry its search order is read in
  step: jax.Array  # () int32: steps taken in the current episode
  episode_actions: jax.Array  # [H] int32: this episode's actions so far
  route: jax.Array  # [H] int32: actions of the episode the last stage paid
  route_len: jax.Array  # () int32: steps of `route` to replay; 0 = none


def validate(config: Config) -> None:
  """Raises ValueError naming any impossible field of `config`."""
  for field in ('num_steps', 'num_actors'):
    if getattr(config, field) < 1:
      raise ValueError(f'{field}={getattr(config, field)}: must be >= 1.')
  if not 0 <= config.epsilon <= 1:
    raise ValueError(f'epsilon={config.epsilon}: must be in [0, 1].')
  if config.order not in ORDERS:
    raise ValueError(f"order='{config.order}': must be one of {ORDERS}.")
  if not 1 <= config.frames <= 8:
    raise ValueError(f'frames={config.frames}: must be in 1..8.')
  if config.exploit not in EXPLOITS:
    raise ValueError(f"exploit='{config.exploit}': must be one of {EXPLOITS}.")
  base.check_imitate(config.imitate)


def num_stages(env) -> int:
  """Cells an episode pays at, in order: 1 for Dark Room, 2 for the key and
  the door; a ValueError for envs this learner cannot walk."""
  if isinstance(env, dark_room.DarkRoom):
    return 1
  if isinstance(env, dark_key_to_door.DarkKeyToDoor):
    return 2
  raise ValueError(
    'The coverage learner walks an (x, y) grid and needs a Dark Room '
    'family env (dark_room, dark_room_hard, dark_key_to_door); got '
    f'{type(env).__name__}.'
  )


def empty_memory(stages: int, size: int, frame=0, horizon: int = 1) -> Memory:
  """An actor that has entered no cell (not even the start: staying on it
  with a no-op is how it learns whether the start pays); `horizon` is the
  episode's length in steps."""
  return Memory(
    visited=jnp.zeros((stages, size, size), bool),
    known=jnp.zeros((stages,), bool),
    target=jnp.zeros((stages, 2), jnp.int32),
    stage=jnp.int32(0),
    frame=jnp.asarray(frame, jnp.int32),
    step=jnp.int32(0),
    episode_actions=jnp.zeros((horizon,), jnp.int32),
    route=jnp.zeros((horizon,), jnp.int32),
    route_len=jnp.int32(0),
  )


def _first_unvisited(pos, visited, rank_GxG) -> jax.Array:
  """The (x, y) of the unvisited cell of lowest `rank` (unique ranks);
  `pos` itself when every cell is visited."""
  size = visited.shape[0]
  rank_GxG = jnp.where(visited, jnp.iinfo(jnp.int32).max, rank_GxG)
  index = jnp.argmin(rank_GxG.reshape(-1))  # first minimum: lowest index
  cell = jnp.stack([index // size, index % size]).astype(jnp.int32)
  return jnp.where(visited.all(), pos, cell)


def _grid(size: int):
  """Cell coordinates x, y, each [size, size], indexed [x, y]."""
  return jnp.meshgrid(jnp.arange(size), jnp.arange(size), indexing='ij')


def framed_grid(size: int, frame) -> tuple[jax.Array, jax.Array]:
  """Cell coordinates x, y [size, size] as seen in symmetry `frame` of
  the grid: 0 the grid itself, 1-3 turned by 90, 180, 270 degrees, 4-7
  those mirrored left to right."""
  x, y = _grid(size)
  m = size - 1
  turns = [(x, y), (m - y, x), (m - x, m - y), (y, m - x)]
  xs = jnp.stack([u for u, _ in turns] + [m - u for u, _ in turns])
  ys = jnp.stack([v for _, v in turns] * 2)
  return xs[frame], ys[frame]


def nearest_unvisited(pos: jax.Array, visited: jax.Array, frame=0) -> jax.Array:
  """The (x, y) of the unvisited cell closest to `pos` (Manhattan; ties to
  the lowest x * size + y in `frame`, see framed_grid); `pos` itself when
  every cell is visited."""
  size = visited.shape[0]
  x, y = _grid(size)
  fx, fy = framed_grid(size, frame)
  distance = jnp.abs(x - pos[0]) + jnp.abs(y - pos[1])
  return _first_unvisited(pos, visited, distance * size * size + fx * size + fy)


def first_unvisited_in_snake(
  pos: jax.Array, visited: jax.Array, frame=0
) -> jax.Array:
  """The (x, y) of the first unvisited cell in boustrophedon order (row y
  by row, x rising on even rows and falling on odd ones; rows and columns
  read in `frame`, see framed_grid); `pos` itself when every cell is
  visited."""
  size = visited.shape[0]
  x, y = framed_grid(size, frame)
  return _first_unvisited(
    pos, visited, y * size + jnp.where(y % 2 == 0, x, size - 1 - x)
  )


def act(
  memory: Memory,
  pos: jax.Array,
  order: str = 'nearest',
  exploit: str = 'shortest',
) -> jax.Array:
  """The learner's action at `pos`: to the stage's paid cell, else explore
  (with exploit='retrace', the recorded route's next action while it lasts)."""
  k = memory.stage
  explore = (
    nearest_unvisited if order == 'nearest' else first_unvisited_in_snake
  )
  target = jnp.where(
    memory.known[k],
    memory.target[k],
    explore(pos, memory.visited[k], memory.frame),
  )
  planned = dark_room.step_toward(pos, target)
  if exploit == 'retrace':
    replaying = memory.step < memory.route_len
    last = memory.route.shape[0] - 1
    planned = jnp.where(
      replaying, memory.route[jnp.minimum(memory.step, last)], planned
    )
  return planned


def remember(
  memory: Memory,
  new_pos: jax.Array,
  reward: jax.Array,
  done: jax.Array,
  action: jax.Array,
) -> Memory:
  """Memory after `action` took it into `new_pos` and paid `reward` (and
  ended the episode if `done`)."""
  k = memory.stage
  paid = reward > 0
  stages = memory.known.shape[0]
  actions = memory.episode_actions.at[memory.step].set(action)
  # The episode's route so far, kept when the last stage first pays.
  first_pay = paid & ~memory.known[k] & (k == stages - 1)
  return Memory(
    visited=memory.visited.at[k, new_pos[0], new_pos[1]].set(True),
    known=memory.known.at[k].set(memory.known[k] | paid),
    target=memory.target.at[k].set(
      jnp.where(paid & ~memory.known[k], new_pos, memory.target[k])
    ),
    # A paid stage hands over to the next; Dark Room's goal, which pays on
    # every step spent on it, stays the last stage.
    stage=jnp.where(done, 0, jnp.minimum(k + paid, stages - 1)),
    frame=memory.frame,
    step=jnp.where(done, 0, memory.step + 1),
    episode_actions=actions,
    route=jnp.where(first_pay, actions, memory.route),
    route_len=jnp.where(first_pay, memory.step + 1, memory.route_len),
  )


def make_train(config: Config, env):
  """Returns `train(key, task_params) -> (Memory, History)`.

  Memory leaves are [num_actors, ...]; history leaves [num_actors,
  num_steps, ...].
  """
  validate(config)
  stages = num_stages(env)
  if config.exploit == 'retrace' and not isinstance(env, dark_room.DarkRoom):
    raise ValueError(
      "exploit='retrace' replays a route from the start cell, which only "
      "Dark Room's fixed start makes the same every episode; use "
      f"exploit='shortest' for {type(env).__name__}."
    )
  num_actors = config.num_actors

  def train(key, task_params):
    size = task_params.size

    def _sweep_step(carry, key_t):
      memory, actors = carry
      key_explore, key_random, key_env = jax.random.split(key_t, 3)
      policy = functools.partial(
        act, order=config.order, exploit=config.exploit
      )
      planned = jax.vmap(policy)(memory, actors.obs)
      action = base.slip(key_explore, key_random, planned, config.epsilon, 5)
      # The cell entered; read off the dynamics because `next_obs` is
      # already the next episode's start when this step ended one.
      new_pos = jax.vmap(dark_room.grid_move, (0, 0, None))(
        actors.obs, action, size
      )
      actors, step = base.step_actors(env, task_params, key_env, actors, action)
      memory = jax.vmap(remember)(
        memory, new_pos, step.reward, step.done, action
      )
      return (memory, actors), base.record(step, planned, config.imitate)

    key_reset, key_scan = jax.random.split(key)
    actors = base.reset_actors(env, task_params, key_reset, num_actors)
    horizon = task_params.max_steps_in_episode
    memory = jax.vmap(
      lambda a: empty_memory(stages, size, a % config.frames, horizon)
    )(jnp.arange(num_actors))
    keys = jax.random.split(key_scan, config.num_steps)
    (memory, _), history = jax.lax.scan(_sweep_step, (memory, actors), keys)
    return memory, base.stream_major(history)

  return train
