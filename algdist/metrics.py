"""What a long run tells its user: metric rows, progress bars, NaN stops.

Metrics go to WORKDIR/metrics/<name>.jsonl (one JSON object per logged
step) and, where tensorboardX is installed, to TensorBoard event files.
Only process 0 writes or draws: every process computes the same global
metrics.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
from collections.abc import Callable, Iterator

import jax

from algdist import files


class MetricWriter:
  """JSON lines always, TensorBoard where tensorboardX is installed."""

  def __init__(self, directory: str, name: str, resume_step: int = 0):
    """Continues WORKDIR/metrics/<name>.jsonl from update `resume_step`
    (the checkpoint a run resumes from): rows after it, which the resumed
    run writes again, are dropped, and so is a line a kill cut short (with
    a warning)."""
    self._enabled = jax.process_index() == 0
    self._path = os.path.join(directory, f'{name}.jsonl')
    self._jsonl = None
    self._tb = None
    if not self._enabled:
      return
    os.makedirs(directory, exist_ok=True)
    self._keep_until(resume_step)
    self._jsonl = open(self._path, 'a')  # noqa: SIM115  (closed in close())
    try:
      from tensorboardX import SummaryWriter  # noqa: PLC0415

      self._tb = SummaryWriter(os.path.join(directory, 'tensorboard', name))
    except ImportError:
      logging.info('tensorboardX not installed: JSON-lines metrics only.')

  def _keep_until(self, step: int) -> None:
    if not os.path.exists(self._path):
      return
    with open(self._path) as f:
      lines = f.read().splitlines()
    kept = []
    for number, line in enumerate(lines, 1):
      try:
        row = json.loads(line)
      except json.JSONDecodeError:
        logging.warning(
          'Dropping line %d of %s, cut short: %r.', number, self._path, line
        )
        continue
      if row.get('step', 0) <= step:
        kept.append(line)
    if len(kept) != len(lines):
      files.write_text(self._path, ''.join(line + '\n' for line in kept))

  def last_row(self) -> dict:
    """The newest row written so far (by this run or the one it resumes)."""
    if not self._enabled or not os.path.getsize(self._path):
      return {}
    with open(self._path) as f:
      return json.loads(f.readlines()[-1])

  def write(self, step: int, scalars: dict) -> None:
    if not self._enabled:
      return
    row = {'step': int(step), **{k: float(v) for k, v in scalars.items()}}
    self._jsonl.write(json.dumps(row) + '\n')
    self._jsonl.flush()
    if self._tb is not None:
      for k, v in scalars.items():
        self._tb.add_scalar(k, float(v), int(step))

  def close(self) -> None:
    if self._jsonl is not None:
      self._jsonl.close()
    if self._tb is not None:
      self._tb.close()


@contextlib.contextmanager
def progress(
  total: int, initial: int, enabled: bool, desc: str, unit: str
) -> Iterator[Callable[[int, str], None]]:
  """A tqdm bar, or a no-op: yields `update(position, postfix)`, which moves
  the bar to `position` (of `total`) and shows `postfix` beside it."""
  if not enabled or jax.process_index() != 0:
    yield lambda *a: None
    return
  from tqdm import tqdm  # noqa: PLC0415  (only the CLI draws bars)

  bar = tqdm(total=total, initial=initial, unit=unit, desc=desc)

  def update(position: int, postfix: str) -> None:
    bar.update(position - bar.n)
    bar.set_postfix_str(postfix)

  try:
    yield update
  finally:
    bar.close()


def check_finite(
  fetched: list[dict], step: int, method: str, last_checkpoint: int | None
) -> None:
  """Stops the run on a non-finite loss, saying where and what to do.

  `fetched` are the metrics of the updates up to `step`, oldest first.
  """
  bad = [i for i, m in enumerate(fetched) if not math.isfinite(m['loss'])]
  if not bad:
    return
  update = step - len(fetched) + bad[0] + 1
  lr = fetched[bad[0]]['learning_rate']
  raise FloatingPointError(
    f'{method}: the training loss became {fetched[bad[0]]["loss"]} at update '
    f'{update} (learning rate {lr:.3g}, gradient norm '
    f'{fetched[bad[0]]["grad_norm"]:.3g}). The last good checkpoint '
    f'({last_checkpoint}) is kept. {RECOVER}'
  )


# What to do after a divergence. Checkpoints record the config that trained
# them, so a changed config never resumes one of the old config's.
RECOVER = (
  'Lower train.learning_rate or raise train.warmup_steps and run again: '
  'with no checkpoint yet, in this workdir; otherwise in another --workdir '
  '(or after deleting WORKDIR/checkpoints/<method>).'
)
