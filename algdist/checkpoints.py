"""Orbax checkpoints of training: save, restore to resume, restore params.

A checkpoint of update s, in WORKDIR/checkpoints/<method>/s, holds the
TrainState ('state': parameters, optimizer state, step, RNG key bits) and
'meta' ({'data_position', 'method', 'config', 'num_steps'}). The data
position needs no restoring: it is the step (see input_pipeline). 'config'
holds the training fields of the config that wrote it
(`config_lib.training_fields`) and 'num_steps' its training horizon:
a checkpoint of another config is refused (`check_provenance`) and one
short of its horizon is a partly trained model (`Provenance.finished`).
A checkpoint written by another model is refused with a CheckpointError
naming the first array that differs, before orbax reads anything.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import logging
import os
import signal
import threading

import flax.linen as nn
import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp

from algdist import config_lib, distributed, metrics, model


class CheckpointError(RuntimeError):
  """A checkpoint that does not fit this run."""


class CorruptCheckpointError(CheckpointError):
  """A checkpoint step whose files cannot be read back."""


class Preempted(Exception):  # noqa: N818  (a notice, not an error)
  """Training stopped on a preemption notice, its state saved."""


# SIGTERMs a single process received while it trained; preemption checks
# made so far (JAX numbers its sync points: every process counts alike).
_SIGTERMS: list = []
_CHECKS = itertools.count(1)


@contextlib.contextmanager
def catch_preemption():
  """Within: a single process takes SIGTERM (what Cloud TPU, SLURM and
  Kubernetes send before they stop a job) as a preemption notice for
  `preempted`, not as the end. Several processes: JAX's preemption service
  catches it, for the whole run. Off the main thread: nothing is caught."""
  catch = (
    jax.process_count() == 1
    and threading.current_thread() is threading.main_thread()
  )
  old = (
    signal.signal(signal.SIGTERM, lambda *_: _SIGTERMS.append(1))
    if catch
    else None
  )
  try:
    yield
  finally:
    if catch:
      signal.signal(signal.SIGTERM, old)


def stop_for_preemption(message: str):
  """Raises Preempted(message), the notice taken (a later run in this
  process, e.g. in a notebook, starts without it)."""
  _SIGTERMS.clear()
  raise Preempted(message)


def preempted() -> bool:
  """Whether a preemption notice has come (then: save and stop).

  Several processes: every process must call this at the same points of
  the run (each call is one of JAX's numbered sync points, and all
  processes answer True at the same one).
  """
  if jax.process_count() == 1:
    return bool(_SIGTERMS)
  from jax.experimental import multihost_utils  # noqa: PLC0415

  try:
    return bool(multihost_utils.reached_preemption_sync_point(next(_CHECKS)))
  except RuntimeError:  # the preemption service is off
    return False


def set_aside(path: str, step: int) -> str:
  """Renames the unreadable step folder `step` of `path` to
  corrupt_<step>[_n] (kept for inspection; managers skip it); returns the
  new name."""
  target = os.path.join(path, f'corrupt_{step}')
  n = 0
  while os.path.exists(target):
    n += 1
    target = os.path.join(path, f'corrupt_{step}_{n}')
  os.rename(os.path.join(path, str(step)), target)
  return target


def directory(workdir: str, method: str) -> str:
  """Where the checkpoints of `method` live in `workdir`."""
  return os.path.join(workdir, 'checkpoints', method)


def make_manager(
  path: str, keep: int | None, create: bool = True
) -> ocp.CheckpointManager:
  """The manager of training: keeps the newest `keep` checkpoints (None:
  all, for a reader that must delete nothing)."""
  path = os.path.abspath(path)
  if create:
    # Made by process 0 before any process looks (a shared workdir: orbax
    # creates it and takes barriers on its own; made first, no process
    # races another to it).
    if jax.process_index() == 0:
      os.makedirs(path, exist_ok=True)
    distributed.barrier(f'checkpoint folder {path}')
  options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=create)
  handlers = {
    'state': ocp.StandardCheckpointHandler(),
    'meta': ocp.JsonCheckpointHandler(),
  }
  return ocp.CheckpointManager(path, options=options, item_handlers=handlers)


@dataclasses.dataclass(frozen=True)
class Provenance:
  """What the newest checkpoint of a method was made from."""

  step: int  # its update
  num_steps: int | None  # the horizon it trained towards; None: not recorded
  config: dict | None  # its training fields; None: not recorded

  @property
  def finished(self) -> bool:
    return self.num_steps is None or self.step >= self.num_steps


def save(
  manager, step: int, state, method: str, config: dict, num_steps: int
) -> None:
  """Saves `state` as checkpoint `step` (asynchronously), with the training
  fields `config` and horizon `num_steps` of the run writing it.

  Non-finite parameters are never saved: a checkpoint is always a model
  worth resuming or evaluating.
  """
  finite = jax.tree.map(lambda x: jnp.isfinite(x).all(), state.params)
  if not all(jax.device_get(jax.tree.leaves(finite))):
    raise FloatingPointError(
      f'{method}: the parameters at update {step} are not finite; no '
      f'checkpoint is written for it (the last good one, '
      f'{manager.latest_step()}, is kept). {metrics.RECOVER}'
    )
  meta = {
    'data_position': step,
    'method': method,
    'config': config,
    'num_steps': num_steps,
  }
  manager.save(
    step,
    args=ocp.args.Composite(
      state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)
    ),
  )


# What to do about an unreadable checkpoint outside training.
_RETRAIN = (
  ' Run --mode train: it sets that step aside and trains it again from the '
  'one before.'
)


@contextlib.contextmanager
def _reader(path: str):
  """A manager that reads (creates and deletes nothing) the checkpoints in
  `path`, or None when there is no such folder (as process 0 found it:
  orbax's barriers must be met by every process or none)."""
  if not distributed.shared(f'read {path}', os.path.isdir(path)):
    yield None
    return
  manager = make_manager(path, keep=None, create=False)
  try:
    yield manager
  finally:
    manager.close()


def read_provenance(manager, path: str) -> Provenance | None:
  """The newest checkpoint `manager` holds and what made it; None without
  one."""
  step = manager.latest_step()
  if step is None:
    return None
  try:
    meta = manager.restore(
      step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())
    )['meta']
  except Exception as e:  # noqa: BLE001  (any unreadable metadata)
    raise CorruptCheckpointError(
      f'{_unreadable(path, step, e)}{_RETRAIN}'
    ) from e
  return Provenance(
    step=int(step), num_steps=meta.get('num_steps'), config=meta.get('config')
  )


def provenance(workdir: str, method: str) -> Provenance | None:
  """The newest checkpoint of `method` and what made it; None without one."""
  path = directory(workdir, method)
  with _reader(path) as manager:
    return None if manager is None else read_provenance(manager, path)


def changed_fields(found: Provenance | None, config: dict) -> list[str]:
  """'field: saved -> now' of each training field that differs from the
  newest checkpoint's (none without a checkpoint or a record)."""
  if found is None or found.config is None:
    return []
  names = sorted(set(found.config) | set(config))
  return [
    f'{k}: {found.config.get(k)!r} -> {config.get(k)!r}'
    for k in names
    if found.config.get(k) != config.get(k)
  ]


def check_provenance(found: Provenance | None, config: dict, path: str):
  """Refuses a checkpoint written under another training config."""
  changed = changed_fields(found, config)
  if changed:
    raise CheckpointError(
      f'The checkpoints in {path} (newest: update {found.step}) were trained '
      f'with another config ({"; ".join(changed)}). Use the config they were '
      f'trained with, another --workdir, or delete {path} to train from '
      'scratch.'
    )


def _path(path) -> str:
  """A tree path as 'a/b/0', the same for a dataclass and its saved dict."""
  parts = []
  for k in path:
    for attr in ('name', 'key', 'idx'):
      if hasattr(k, attr):
        parts.append(str(getattr(k, attr)))
        break
  return '/'.join(parts)


def _check_shapes(saved, abstract, step: int, path: str) -> None:
  """Raises CheckpointError naming the first array whose shape differs
  between the `saved` metadata tree and `abstract`."""
  have = {
    _path(p): tuple(m.shape)
    for p, m in jax.tree_util.tree_flatten_with_path(saved)[0]
  }
  fix = (
    f'It was written by another model: use the config it was trained with, '
    f'another --workdir, or delete {path} to train from scratch.'
  )
  for leaf_path, leaf in jax.tree_util.tree_flatten_with_path(abstract)[0]:
    name = _path(leaf_path)
    if name not in have:
      raise CheckpointError(
        f'The checkpoint in {path} (update {step}) has no {name}. {fix}'
      )
    if have[name] != tuple(leaf.shape):
      raise CheckpointError(
        f'The checkpoint in {path} (update {step}) holds {name} of '
        f'shape {have[name]}; this config builds {tuple(leaf.shape)}. {fix}'
      )
  extra = sorted(
    set(have)
    - {_path(p) for p, _ in jax.tree_util.tree_flatten_with_path(abstract)[0]}
  )
  if extra:
    raise CheckpointError(
      f'The checkpoint in {path} (update {step}) holds {extra[0]}, '
      f'which this config does not build. {fix}'
    )


def _unreadable(path: str, step: int, e: Exception) -> CorruptCheckpointError:
  first = (str(e).strip().splitlines() or [''])[0][:200]
  return CorruptCheckpointError(
    f'Checkpoint update {step} in {path} cannot be read '
    f'({type(e).__name__}: {first}).'
  )


def _restore(manager, step: int, path: str, layout):
  """The state of checkpoint `step`, laid out as `layout(saved)` says of
  its saved metadata (which checks it). Unreadable files raise
  CorruptCheckpointError."""
  try:
    saved = manager.item_metadata(step)['state']
  except Exception as e:  # noqa: BLE001  (any unreadable metadata)
    raise _unreadable(path, step, e) from e
  if saved is None:  # orbax reads a missing _METADATA as no item
    raise _unreadable(path, step, FileNotFoundError('no state metadata'))
  target = layout(saved)
  try:
    restored = manager.restore(
      step,
      args=ocp.args.Composite(
        state=ocp.args.StandardRestore(target), meta=ocp.args.JsonRestore()
      ),
    )
  except Exception as e:  # noqa: BLE001  (tensorstore, JSON, missing files)
    raise _unreadable(path, step, e) from e
  return restored['state']


def restore_state(manager, step: int, abstract, path: str):
  """The TrainState of checkpoint `step`, laid out as `abstract` says.

  Raises CheckpointError for another model's checkpoint, its subclass
  CorruptCheckpointError for files that cannot be read back.
  """

  def layout(saved):
    _check_shapes(saved, abstract, step, path)
    return abstract

  return _restore(manager, step, path, layout)


def restore_latest(manager, abstract, path: str):
  """The TrainState of the newest readable checkpoint, or None without one.

  A newest step that cannot be read (a flipped byte, a deleted file) is set
  aside with a warning and the one before it restored: resuming from it
  trains the lost updates again, bit for bit.
  """
  while (step := manager.latest_step()) is not None:
    try:
      state, error = restore_state(manager, step, abstract, path), None
    except CorruptCheckpointError as e:
      state, error = None, e
    # A step that any process could not read is set aside by process 0
    # (one rename of the shared folder), and every process moves on.
    if not distributed.anywhere(f'restored {path} {step}', error is not None):
      return state
    if jax.process_index() == 0:
      moved = set_aside(path, step)
      logging.warning(
        '%s Set aside as %s; resuming from the one before.',
        error or f'Another process could not read step {step}.',
        moved,
      )
    distributed.barrier(f'set aside {path} {step}')
    manager.reload()
  return None


def restore_params(config, workdir: str, method: str = 'ad'):
  """`(ModelConfig, params)` of the newest `method` checkpoint in `workdir`,
  on one local device of this process (evaluation replicates them).

  No optimizer, mesh or training layout is built: the checkpoint is read as
  its own metadata describes it, and only its parameters are kept.
  """
  cfg, obs = config_lib.model_config(config)
  net = model.Transformer(cfg)
  inputs = model.example_steps(cfg, obs.shape, obs.dtype)
  # The model's parameter shapes, to check the checkpoint against.
  abstract = {
    'params': jax.eval_shape(
      lambda key: nn.meta.unbox(net.init(key, inputs, deterministic=True)),
      jax.random.key(0),
    )['params']
  }
  # A local device, not jax.devices()[0]: on a multi-host run that one
  # belongs to process 0 and other processes cannot write to it.
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  path = directory(workdir, method)

  def layout(saved):
    _check_shapes({'params': saved['params']}, abstract, step, path)
    # The saved tree is read as its own metadata describes it (the
    # optimizer state as plain arrays): no optimizer is built, and the
    # parameters land on `device` in the layout the model expects.
    on_device = lambda m: jax.ShapeDtypeStruct(
      m.shape, m.dtype, sharding=device
    )
    return jax.tree.map(on_device, saved)

  with _reader(path) as manager:
    step = None if manager is None else manager.latest_step()
    if step is None:
      raise CheckpointError(
        f'No {method} checkpoint in {path}; run --mode train first.'
      )
    try:
      return cfg, _restore(manager, step, path, layout)['params']
    except CorruptCheckpointError as e:
      raise CorruptCheckpointError(f'{e}{_RETRAIN}') from e
