"""Test setup: 8 fake CPU devices, so sharding code runs in every test run,
and one compilation cache for the whole run."""

import os
import tempfile

# Must happen before JAX is imported anywhere.
os.environ['XLA_FLAGS'] = (
  os.environ.get('XLA_FLAGS', '') + ' --xla_force_host_platform_device_count=8'
)
os.environ.setdefault('JAX_PLATFORMS', 'cpu')
# Many tests build the same model, env step or learner afresh, and on 2 cores
# compiling is most of their time: a persistent cache (keyed by the program,
# so a hit is the same executable) compiles each program once per run. A new
# directory per run, shared by its pytest-xdist workers, unless the caller
# names one to reuse across runs; the environment carries it to the CLI
# subprocesses too.
_RUN = os.environ.get('PYTEST_XDIST_TESTRUNUID')
os.environ.setdefault(
  'JAX_COMPILATION_CACHE_DIR',
  os.path.join(tempfile.gettempdir(), f'algdist_jax_cache_{_RUN}')
  if _RUN
  else tempfile.mkdtemp(prefix='algdist_jax_cache_'),
)
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0')
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES', '0')
