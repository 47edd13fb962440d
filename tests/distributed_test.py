"""Multi-process start: jax.distributed from the environment, before any
device is used (algdist.distributed, called first by algdist.main)."""

import os
import socket
import subprocess
import sys

import pytest

from algdist import distributed


def test_a_single_process_run_starts_nothing_and_a_half_setting_is_named():
  assert distributed.initialize_from_env({}) is False
  with pytest.raises(ValueError, match='not ALGDIST_NUM_PROCESSES'):
    distributed.initialize_from_env(
      {'ALGDIST_COORDINATOR': 'localhost:1234', 'ALGDIST_PROCESS_ID': '0'}
    )
  with pytest.raises(ValueError, match='must be integers'):
    distributed.initialize_from_env(
      {
        'ALGDIST_COORDINATOR': 'localhost:1234',
        'ALGDIST_NUM_PROCESSES': 'two',
        'ALGDIST_PROCESS_ID': '0',
      }
    )


# Each process imports the command line (which must start jax.distributed
# before gymnax's import touches a device), all-gathers its index, asks the
# shared questions (inside a mesh context, as training does) and builds a
# hybrid mesh of one granule per process. The answer goes to a file: gloo
# writes its own lines into stdout mid-print.
_PROBE = """
import os
import algdist.main
import jax, numpy as np
from jax.experimental import multihost_utils
from algdist import distributed, sharding
seen = multihost_utils.process_allgather(np.int32(jax.process_index()))
second = jax.process_index() == 1
mesh = sharding.make_mesh((1, -1), ('replica', 'data'), dcn_shape=(2, 1))
with jax.set_mesh(mesh):
  asked = distributed.anywhere('a', second), distributed.shared('s', second)
rows = [sorted({d.process_index for d in row}) for row in mesh.devices]
with open(os.environ['PROBE_OUT'], 'w') as f:
  print('probe', jax.process_index(), jax.process_count(), jax.device_count(),
        jax.local_device_count(), sorted(np.asarray(seen).ravel().tolist()),
        *asked, rows, file=f)
"""


def test_two_processes_of_two_devices_form_one_run_of_four(tmp_path):
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    port = s.getsockname()[1]
  procs = []
  for i in range(2):
    env = dict(
      os.environ,
      XLA_FLAGS='--xla_force_host_platform_device_count=2',
      JAX_PLATFORMS='cpu',
      ALGDIST_COORDINATOR=f'127.0.0.1:{port}',
      ALGDIST_NUM_PROCESSES='2',
      ALGDIST_PROCESS_ID=str(i),
      PROBE_OUT=str(tmp_path / f'probe{i}'),
    )
    procs.append(
      subprocess.Popen(
        [sys.executable, '-c', _PROBE],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
      )
    )
  try:
    errs = [p.communicate(timeout=180)[1] for p in procs]
  finally:
    for p in procs:  # a survivor would wait in a barrier forever
      p.kill()
  assert [p.returncode for p in procs] == [0, 0], errs
  lines = [(tmp_path / f'probe{i}').read_text().strip() for i in range(2)]
  # anywhere: process 1's True; shared: process 0's False; the hybrid
  # mesh's 'replica' rows are the processes.
  tail = '[0, 1] True False [[0], [1]]'
  assert lines == [f'probe 0 2 4 2 {tail}', f'probe 1 2 4 2 {tail}']
