"""Task families as gymnax environments, and `make(name)` to build one.

Every family is one file here: `adversarial_bandit`, `dark_room` (also
`dark_room_hard`), `dark_key_to_door` and `watermaze`. Gymnax's own
environments are available as `gymnax:<id>`, e.g. `gymnax:MetaMaze-misc`.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable

import gymnax

from algdist.envs.base import SPLITS, Split, TaskFamily

__all__ = ['SPLITS', 'Split', 'TaskFamily', 'make', 'names']

GYMNAX_PREFIX = 'gymnax:'

# name -> (module, class, constructor kwargs). Imported on demand, so that
# importing algdist.envs stays cheap.
_REGISTRY: dict[str, tuple[str, str, dict]] = {
  'adversarial_bandit': ('adversarial_bandit', 'AdversarialBandit', {}),
  'dark_room': ('dark_room', 'DarkRoom', {'size': 9}),
  'dark_room_hard': (
    'dark_room',
    'DarkRoom',
    {'size': 17, 'terminate_on_goal': True},
  ),
  'dark_key_to_door': ('dark_key_to_door', 'DarkKeyToDoor', {}),
  'watermaze': ('watermaze', 'Watermaze', {}),
}


def names() -> list[str]:
  """The names `make` accepts, besides `gymnax:<id>`."""
  return sorted(_REGISTRY)


def _factory(name: str) -> Callable[[], TaskFamily]:
  module, cls, kwargs = _REGISTRY[name]
  env_cls = getattr(importlib.import_module(f'algdist.envs.{module}'), cls)
  return lambda: env_cls(**kwargs)


def make(name: str, **overrides):
  """Returns `(env, default_params)` for a task family or a gymnax env.

  `overrides` replace fields of the default params (e.g. `size=7`); an unknown
  field or an impossible value raises a ValueError that names it.
  """
  if name.startswith(GYMNAX_PREFIX):
    env_id = name[len(GYMNAX_PREFIX) :]
    if env_id not in gymnax.registered_envs:
      raise ValueError(
        f"Unknown gymnax environment '{env_id}'. Known: "
        f'{", ".join(gymnax.registered_envs)}.'
      )
    env, params = gymnax.make(env_id)
  elif name in _REGISTRY:
    env = _factory(name)()
    params = env.default_params
  else:
    raise ValueError(
      f"Unknown environment '{name}'. Known: {', '.join(names())}, or "
      f"'{GYMNAX_PREFIX}<id>' for any of gymnax's environments."
    )
  if overrides:
    fields = {f.name for f in dataclasses.fields(params)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
      raise ValueError(
        f'{name} has no parameter(s) {unknown}. Its parameters: '
        f'{sorted(fields)}.'
      )
    params = params.replace(**overrides)
  if isinstance(env, TaskFamily):
    env.validate(params)
  return env, params
