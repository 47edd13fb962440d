"""R-max on Watermaze: model-based RL over places, optimistic about the unknown.

A reinforcement learner for Watermaze (algdist/envs/watermaze.py) whose
learning history improves within a few episodes, so that the improvement
fits in AD's context. It acts from the agent's pose (position and heading),
read from the environment's state, which AD never sees: AD sees only the
frames. It knows nothing of the platform but what its rewards tell it.

Its states are places: the points of a lattice over the arena, each
owning the positions nearer to it than to any other point. Its model,
learned from its own steps and kept across episodes, is a reward model:
for each place, the steps that ended there, the steps of those that paid,
and where the paying steps ended. A place it has never ended a step in is
assumed to pay `optimism` (R-max, Brafman & Tennenholtz 2002: the agent
acts optimally for a model in which what it has not tried pays well, so it
either gets paid or learns that the model was wrong). Motion is known: the
arena is open and convex, so the shortest way to any point is straight,
and a paying step respawns the agent (pay ends the path). Under that model
the value of heading for place p is its pay rate times `discount` to the
number of steps to where it pays (its point while unpaid), and planning is
exact in one pass: head for the place worth most, steering toward it.
Before any pay, the nearest unknown place is worth most, so its first
episodes sweep the arena; once a place has paid, its rate, far above
`optimism`, draws the agent back there from every respawn.

Why it exists: Dyna-Q over fine pose cells (algdist/agents/dyna_q.py)
learns as fast, but its greedy action among moves of equal value is a
coin toss and its values depend on which of thousands of (cell, heading,
move) triples it has tried, mostly in episodes older than AD's context;
AD distilled from it stays flat (RESULTS.md). This learner's state is a
few dozen places, and what it does next follows from where it is and what
the last few episodes showed, which frames can tell.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import struct

from algdist.agents import base, pose_search
from algdist.envs import watermaze


@dataclasses.dataclass(frozen=True)
class Config:
  """One R-max learner's whole history."""

  num_steps: int = 800  # env steps per stream (T)
  num_actors: int = 1  # streams, each with its own model and env copy
  spacing: float = 0.25  # side of the lattice of places (arena units)
  # Per step of the way: with 0.99 a place that paid half the time is
  # worth more from anywhere in the arena than an unknown place next door.
  discount: float = 0.99
  optimism: float = 0.2  # pay assumed for a place never ended a step in
  # Heading error (degrees) within which it moves straight ahead; up to 3x
  # this it turns and moves at once; beyond, it turns (pose_search.steer).
  aim: float = 15.0
  epsilon: float = 0.0  # probability of a uniform random action per step
  # The action the history asks the model to imitate: 'taken' or 'planned'
  # (the greedy one, also where epsilon replaced it; History.target).
  imitate: str = 'taken'


CONFIGS = {'rmax': Config()}
# Each actor keeps its own model: a stream's episode is one episode of
# experience, however many actors run beside it (algdist.agents).
POOLS_ACTORS = False
RECORDS_STATE = True  # train(..., record_state=True) keeps its env states


@struct.dataclass
class Model:
  """What one actor has learned, across episodes; P places."""

  arrivals: jax.Array  # [P] float32: steps that ended in each place
  pays: jax.Array  # [P] float32: of those, the steps that paid
  paid_sum: jax.Array  # [P, 2] float32: where the paying steps ended, summed


def validate(config: Config) -> None:
  """Raises ValueError naming any impossible field of `config`."""
  for field in ('num_steps', 'num_actors'):
    if getattr(config, field) < 1:
      raise ValueError(f'{field}={getattr(config, field)}: must be >= 1.')
  if not 0 < config.spacing < 1:
    raise ValueError(
      f'spacing={config.spacing}: must be in (0, 1) arena units.'
    )
  if not 0 < config.discount < 1:
    raise ValueError(f'discount={config.discount}: must be in (0, 1).')
  if not 0 < config.optimism <= 1:
    raise ValueError(f'optimism={config.optimism}: must be in (0, 1].')
  if not 0 < config.aim < 60:
    raise ValueError(f'aim={config.aim}: must be in (0, 60) degrees.')
  if not 0 <= config.epsilon <= 1:
    raise ValueError(f'epsilon={config.epsilon}: must be in [0, 1].')
  base.check_imitate(config.imitate)


def place(pos, points) -> jax.Array:
  """Index of the place (nearest lattice point) holding position `pos`."""
  return jnp.argmin(jnp.sum((points - pos) ** 2, -1))


def place_values(model: Model, pos, points, config: Config, step_size: float):
  """([P] what heading for each place is worth from `pos`, [P, 2] where in
  each place to head): its pay rate (`optimism` if never ended a step in),
  discounted by the steps to where it paid (its point while unpaid)."""
  known = model.arrivals > 0
  rate = jnp.where(
    known, model.pays / jnp.maximum(model.arrivals, 1.0), config.optimism
  )
  paid = (model.pays > 0)[:, None]
  spot = jnp.where(
    paid, model.paid_sum / jnp.maximum(model.pays, 1.0)[:, None], points
  )
  steps = jnp.linalg.norm(spot - pos, axis=-1) / step_size
  return rate * config.discount**steps, spot


def act(model: Model, pos, heading, points, config: Config, step_size: float):
  """The greedy action: steer toward the place worth most."""
  value, spot = place_values(model, pos, points, config, step_size)
  return pose_search.steer(pos, heading, spot[jnp.argmax(value)], config.aim)


def learn(model: Model, new_pos, reward, points) -> Model:
  """The model after a step that ended at `new_pos` (before any respawn)
  and paid `reward`."""
  where = place(new_pos, points)
  paid = (reward > 0).astype(jnp.float32)
  arrivals = model.arrivals.at[where].add(1.0)
  pays = model.pays.at[where].add(paid)
  # Every place tried and none paid (the platform lies where no step has
  # ended yet): forget the misses and sweep again, as R-max would after
  # learning its model was wrong.
  stale = jnp.all(arrivals > 0) & (pays.sum() == 0)
  arrivals = jnp.where(
    stale, jnp.zeros_like(arrivals).at[where].set(1.0), arrivals
  )
  return Model(
    arrivals=arrivals,
    pays=pays,
    paid_sum=model.paid_sum.at[where].add(paid * new_pos),
  )


def make_train(config: Config, env):
  """Returns `train(key, task_params) -> (Model, History)`.

  Model leaves are [num_actors, ...]; history leaves [num_actors,
  num_steps, ...].
  """
  validate(config)
  base.require_env(env, watermaze.Watermaze, 'rmax')
  num_actors = config.num_actors

  def train(key, task_params, record_state: bool = False):
    # record_state: the history keeps each step's env state (videos).
    points = jnp.asarray(pose_search.sweep_points(config.spacing, task_params))
    step_size = task_params.step_size
    greedy_action = jax.vmap(
      lambda model, pos, heading: act(
        model, pos, heading, points, config, step_size
      )
    )

    def _rmax_step(carry, key_t):
      model, actors = carry
      key_explore, key_random, key_env = jax.random.split(key_t, 3)
      state = actors.env_state
      planned = greedy_action(model, state.pos, state.heading)
      action = base.slip(
        key_explore, key_random, planned, config.epsilon, len(watermaze.ACTIONS)
      )
      # Where the step took it: read off the dynamics, because the env
      # state is already a respawn when the step paid.
      new_pos, _ = jax.vmap(watermaze.move, (0, 0, 0, None))(
        state.pos, state.heading, action, task_params
      )
      actors, step = base.step_actors(env, task_params, key_env, actors, action)
      model = jax.vmap(learn, (0, 0, 0, None))(
        model, new_pos, step.reward, points
      )
      return (model, actors), base.record(
        step, planned, config.imitate, state if record_state else None
      )

    key_reset, key_scan = jax.random.split(key)
    actors = base.reset_actors(env, task_params, key_reset, num_actors)
    num_places = points.shape[0]
    model = Model(
      arrivals=jnp.zeros((num_actors, num_places), jnp.float32),
      pays=jnp.zeros((num_actors, num_places), jnp.float32),
      paid_sum=jnp.zeros((num_actors, num_places, 2), jnp.float32),
    )
    keys = jax.random.split(key_scan, config.num_steps)
    (model, _), history = jax.lax.scan(_rmax_step, (model, actors), keys)
    return model, base.stream_major(history)

  return train
