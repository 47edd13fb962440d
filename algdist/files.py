"""Files the pipeline writes for other tools to read, written atomically.

A reader (another stage, a resumed run, a plotting script) sees the old file
or the new one, never half of one: each write goes to `PATH.<pid>.tmp`, is
flushed to disk, and is renamed over `PATH`.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os


def write_text(path: str, text: str | bytes) -> None:
  """Writes `text` (or bytes) to `path` atomically (a temporary name of
  this process's own: two processes writing one file never share a
  half-written one)."""
  tmp = f'{path}.{os.getpid()}.tmp'
  with open(tmp, 'wb' if isinstance(text, bytes) else 'w') as f:
    f.write(text)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)


def write_json(path: str, obj, allow_nan: bool = False) -> None:
  """Writes `obj` as JSON atomically; NaN or infinity is an error, since
  strict JSON readers reject them, unless `allow_nan` (Python's reader
  takes them)."""
  write_text(path, json.dumps(obj, indent=1, allow_nan=allow_nan))


class FileError(RuntimeError):
  """A file of the workdir that cannot be read as what it should be."""


def read_json(path: str, default=None, remedy: str = ''):
  """The JSON object at `path`, or `default` when there is no file.

  A file that is not a JSON object raises FileError naming it, what is
  wrong and `remedy` (what to do about it).
  """
  if not os.path.exists(path):
    return default
  try:
    with open(path) as f:
      obj = json.load(f)
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise FileError(f'{path} is not valid JSON ({e}). {remedy}'.strip()) from e
  except IsADirectoryError as e:
    raise FileError(
      f'{path} is a directory, not a file. {remedy}'.strip()
    ) from e
  if not isinstance(obj, dict):
    kind = type(obj).__name__
    raise FileError(f'{path} holds a JSON {kind}, not an object. {remedy}')
  return obj


@contextlib.contextmanager
def workdir_lock(workdir: str):
  """Holds `workdir` for one run: a second one is refused, naming the
  holder. The lock is the kernel's (flock), so a killed run frees it."""
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise FileError(f'--workdir {workdir} is a file; choose a directory.')
  path = os.path.join(workdir, '.lock')
  try:
    os.makedirs(workdir, exist_ok=True)
    f = open(path, 'a+')  # noqa: SIM115  (held until the run ends)
  except OSError as e:
    raise FileError(
      f'--workdir {workdir} cannot be written ({e.strerror}); choose one '
      'this user may write to.'
    ) from e
  try:
    try:
      fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      f.seek(0)
      holder = f.read().strip() or 'another process'
      raise FileError(
        f'{workdir} is in use by another run ({holder}); wait for it to '
        'end, or use another --workdir.'
      ) from None
    f.seek(0)
    f.truncate()
    f.write(f'pid {os.getpid()}')
    f.flush()
    yield
  finally:
    f.close()
