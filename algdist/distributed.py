"""Process setup from the environment, before any device is used:
`jax.distributed` for multi-process runs, and the compilation cache.

A run spans several processes (TPU pod workers, one per GPU node or GPU,
or several on one machine) when the environment asks for it:

  ALGDIST_DISTRIBUTED=1       a cluster JAX detects itself (Cloud TPU,
                              SLURM, Open MPI, Kubernetes)
  ALGDIST_COORDINATOR=host:port, ALGDIST_NUM_PROCESSES=N,
  ALGDIST_PROCESS_ID=i        explicit (the local launcher)
  ALGDIST_LOCAL_DEVICE_IDS=0,1  optional: this process's devices

A single-process run sets none of them and never starts it. The command
line (`algdist.main`) calls `initialize_from_env` before importing the rest
of algdist: importing gymnax builds arrays, which starts JAX's backends, and
`jax.distributed.initialize` must come before that.
"""

from __future__ import annotations

import os

import jax
import numpy as np

_EXPLICIT = (
  'ALGDIST_COORDINATOR',
  'ALGDIST_NUM_PROCESSES',
  'ALGDIST_PROCESS_ID',
)


def initialize_from_env(environ=None) -> bool:
  """Starts `jax.distributed` as the environment says; False when it says
  nothing (a single process). Raises ValueError, naming the variables,
  for an incomplete or malformed explicit setting."""
  environ = os.environ if environ is None else environ
  given = [k for k in _EXPLICIT if environ.get(k)]
  auto = environ.get('ALGDIST_DISTRIBUTED', '') not in ('', '0')
  if not given and not auto:
    return False
  if given and len(given) != len(_EXPLICIT):
    missing = sorted(set(_EXPLICIT) - set(given))
    raise ValueError(
      f'Multi-process run: {", ".join(given)} set but not {", ".join(missing)}'
      '; set all three, or ALGDIST_DISTRIBUTED=1 alone on a cluster JAX '
      'detects (Cloud TPU, SLURM, Open MPI, Kubernetes).'
    )
  kwargs = {}
  if given:
    try:
      kwargs = dict(
        coordinator_address=environ['ALGDIST_COORDINATOR'],
        num_processes=int(environ['ALGDIST_NUM_PROCESSES']),
        process_id=int(environ['ALGDIST_PROCESS_ID']),
      )
    except ValueError as e:
      raise ValueError(
        f'ALGDIST_NUM_PROCESSES and ALGDIST_PROCESS_ID must be integers ({e}).'
      ) from None
  if environ.get('ALGDIST_LOCAL_DEVICE_IDS'):
    ids = environ['ALGDIST_LOCAL_DEVICE_IDS'].split(',')
    kwargs['local_device_ids'] = [int(i) for i in ids]
  # CPU processes exchange collectives through gloo (the default has none
  # across processes); accelerators ignore this setting.
  jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  jax.distributed.initialize(**kwargs)
  return True


def barrier(name: str) -> None:
  """Waits until every process reaches barrier `name` (nothing to wait
  for in a single-process run)."""
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # noqa: PLC0415

    multihost_utils.sync_global_devices(name)


def anywhere(name: str, value: bool) -> bool:
  """Whether `value` is True on any process (every process must ask)."""
  if jax.process_count() == 1:
    return value
  from jax.experimental import multihost_utils  # noqa: PLC0415

  barrier(name)
  # Host values (numpy): under a mesh context jnp would build a global
  # array, which gathers differently.
  flags = multihost_utils.process_allgather(np.int32(value))
  return bool(np.any(flags))


def shared(name: str, value: bool) -> bool:
  """`value` as process 0 decided it, on every process (after barrier
  `name`): a decision made once, so that processes never branch apart."""
  if jax.process_count() == 1:
    return value
  from jax.experimental import multihost_utils  # noqa: PLC0415

  barrier(name)
  return bool(multihost_utils.broadcast_one_to_all(np.int32(value)))


def compilation_cache_from_env(environ=None) -> str | None:
  """Turns on JAX's persistent compilation cache (programs compiled once
  are read back by later runs: another workdir, a resumed run, a rerun);
  returns its folder, None when off.

  ALGDIST_COMPILATION_CACHE names the folder (default
  $XDG_CACHE_HOME/algdist/jax, or ~/.cache/algdist/jax; JAX's own
  JAX_COMPILATION_CACHE_DIR, when set, wins); '' or 0: none set here. Call
  before anything compiles: JAX reads the setting once.
  """
  environ = os.environ if environ is None else environ
  default = os.path.join(
    environ.get('XDG_CACHE_HOME') or os.path.expanduser('~/.cache'),
    'algdist',
    'jax',
  )
  path = environ.get('ALGDIST_COMPILATION_CACHE', default)
  if path in ('', '0'):
    return None
  path = jax.config.jax_compilation_cache_dir or path
  jax.config.update('jax_compilation_cache_dir', path)
  # Every program, the small ones too: on 2 CPU cores they add up (the
  # Dark Room smoke pipeline: 52 s with nothing cached, 18 s after).
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.0)
  return path
