"""Source RL algorithms whose learning histories AD distils.

Each module holds one algorithm (or a family of close variants): a frozen
`Config` dataclass, `CONFIGS` mapping each algorithm name it serves to its
default config, and `make_train(config, env) -> train(key, task_params) ->
(state, History)`. A module whose actors each learn alone sets
`POOLS_ACTORS = False`; otherwise a learner's actors pool their experience
(one stream's episode cost num_actors episodes of it).
"""

from __future__ import annotations

import dataclasses
import importlib

from algdist.agents.base import History

__all__ = ['History', 'get', 'names']

# name -> module under algdist.agents.
_ALGORITHMS = {
  'a2c': 'actor_critic',
  'ppo': 'actor_critic',
  'dqn': 'dqn',
  'q_learning': 'q_learning',
  'ucb': 'bandits',
  'thompson': 'bandits',
  'noise_distillation': 'noise_distillation',
  'coverage': 'coverage',
  'pose_search': 'pose_search',
  'dyna_q': 'dyna_q',
  'rmax': 'rmax',
}


def names() -> list[str]:
  return sorted(_ALGORITHMS)


def pools_actors(name: str) -> bool:
  """Whether algorithm `name`'s actors pool their experience (one stream's
  episode cost num_actors episodes of it); False for a module whose actors
  each learn alone (`POOLS_ACTORS = False`)."""
  return getattr(_module(name), 'POOLS_ACTORS', True)


def records_state(name: str) -> bool:
  """Whether algorithm `name`'s train takes `record_state=True` and then
  keeps each step's env state in History.state (`RECORDS_STATE = True`:
  the learners that act from it)."""
  return getattr(_module(name), 'RECORDS_STATE', False)


def _module(name: str):
  return importlib.import_module(f'algdist.agents.{_ALGORITHMS[name]}')


def get(name: str, **config):
  """Returns `(config, make_train)` for algorithm `name` with `config` set.

  A field the algorithm's config does not have raises a ValueError naming it.
  """
  if name not in _ALGORITHMS:
    raise ValueError(
      f"Unknown source algorithm '{name}'. Known: {', '.join(names())}."
    )
  module = _module(name)
  default = module.CONFIGS[name]
  fields = {f.name for f in dataclasses.fields(default)}
  unknown = sorted(set(config) - fields)
  if unknown:
    raise ValueError(
      f'{name} has no setting(s) {unknown}. Its settings: {sorted(fields)}.'
    )
  return dataclasses.replace(default, **config), module.make_train
