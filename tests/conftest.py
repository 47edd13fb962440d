"""Test setup: 8 fake CPU devices, so sharding code runs in every test run."""

import os

# Must happen before JAX is imported anywhere.
os.environ['XLA_FLAGS'] = (
  os.environ.get('XLA_FLAGS', '') + ' --xla_force_host_platform_device_count=8'
)
os.environ.setdefault('JAX_PLATFORMS', 'cpu')
