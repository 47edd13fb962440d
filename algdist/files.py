"""Files the pipeline writes for other tools to read, written atomically.

A reader (another stage, a resumed run, a plotting script) sees the old file
or the new one, never half of one: each write goes to `PATH.tmp`, is flushed
to disk, and is renamed over `PATH`.
"""

from __future__ import annotations

import json
import os


def write_text(path: str, text: str) -> None:
  """Writes `text` to `path` atomically."""
  tmp = path + '.tmp'
  with open(tmp, 'w') as f:
    f.write(text)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)


def write_json(path: str, obj, allow_nan: bool = False) -> None:
  """Writes `obj` as JSON atomically; NaN or infinity is an error, since
  strict JSON readers reject them, unless `allow_nan` (Python's reader
  takes them)."""
  write_text(path, json.dumps(obj, indent=1, allow_nan=allow_nan))


def read_json(path: str, default=None):
  """The JSON object at `path`, or `default` when there is no file."""
  if not os.path.exists(path):
    return default
  with open(path) as f:
    return json.load(f)
