"""What every algdist task family adds to gymnax's `Environment`.

A task family is a gymnax environment whose `EnvParams` leaves identify one
task (a goal cell, a platform position, arm means), so that one jitted `step`
serves every task under `vmap`. Fields that set shapes or split the tasks are
static (`pytree_node=False`). On top of gymnax, a family provides:

- `validate(params)`: raise on impossible settings, naming them;
- `tasks(params, split, num, seed)`: a batch of tasks (leaves lead with N) from
  the train or test set; the two sets are disjoint and fixed by
  `params.split_seed`;
- `optimal_return(params)`: the optimal expected return of one episode of one
  task, where it is known in closed form;
- `optimal_action(state, params)`: an optimal policy, where one is known (the
  demonstrator of noise distillation and the oracle of evaluation tests);
- optional report hooks, None unless a family has one: `render_top_down` (a
  map beside the agent's view in rollout GIFs) and `plot_learning_curve`
  (the source's learning in the family's own terms).

Rollouts of a policy in any env are `algdist.rollout.make_policy_rollout`.
"""

from __future__ import annotations

from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
from gymnax.environments import environment

Split = Literal['train', 'test']
SPLITS = ('train', 'test')


class TaskFamily(environment.Environment):
  """A gymnax environment whose params carry task identity."""

  def validate(self, params) -> None:
    """Raises ValueError naming any impossible field of `params`."""

  def tasks(self, params, split: Split, num: int | None = None, seed: int = 0):
    """Returns `num` tasks of `split` as params with leaves of leading dim N."""
    raise NotImplementedError

  def optimal_return(self, params) -> jax.Array:
    """Optimal expected return of one episode of the task in `params`."""
    raise NotImplementedError(f'{self.name} has no closed-form optimal return.')

  def optimal_action(self, state, params) -> jax.Array:
    """An action of an optimal policy in `state`."""
    raise NotImplementedError(f'{self.name} has no known optimal policy.')

  # `render_top_down(state, params, trail=None) -> (S, S, 3) uint8`: a map
  # for people, drawn beside the agent's view in rollout GIFs
  # (video.write_rollout_gif); `trail` = (states [T], shown [T] bool) marks
  # where the agent has been.
  render_top_down = None
  # `plot_learning_curve(history [H, T], length [H], tasks, task_index [H],
  # title, path) -> summary dict`: plots the source's learning to `path`
  # instead of return per episode (main.generate_stage).
  plot_learning_curve = None


def check_split(split: str) -> None:
  if split not in SPLITS:
    raise ValueError(f"split must be one of {SPLITS}, got '{split}'.")


def require(condition: bool, message: str) -> None:
  """Raises a ValueError with `message` unless `condition` holds."""
  if not condition:
    raise ValueError(message)


def split_task_ids(
  num_tasks: int, num_test: int, split_seed: int
) -> dict[str, np.ndarray]:
  """Splits task ids 0..num_tasks-1 into disjoint, seed-fixed train/test sets.

  Host-side numpy: the split is a fixed property of the task family, not
  something sampled under jit.
  """
  require(
    0 < num_test < num_tasks,
    f'num_test_tasks={num_test} must be in [1, {num_tasks - 1}] for a '
    f'family of {num_tasks} tasks.',
  )
  order = np.random.default_rng(split_seed).permutation(num_tasks)
  return {
    'test': np.sort(order[:num_test]),
    'train': np.sort(order[num_test:]),
  }


def choose_ids(ids: np.ndarray, num: int | None, seed: int) -> np.ndarray:
  """All `ids` in order (num=None), or `num` of them in a seeded order.

  Sampling cycles through seeded permutations, so that N histories over K
  tasks visit every task N/K times, give or take one.
  """
  if num is None:
    return ids
  require(num >= 1, f'num={num} tasks requested; it must be >= 1.')
  rng = np.random.default_rng(seed)
  reps = -(-num // len(ids))
  return np.concatenate([rng.permutation(ids) for _ in range(reps)])[:num]


def batch_replace(params, **leaves):
  """`params` with task leaves replaced by batched arrays (leading dim N)."""
  return params.replace(**{k: jnp.asarray(v) for k, v in leaves.items()})
