"""Learning histories on disk -> batches of across-episode windows.

Training calls one function, `make_pipeline`. Follow a batch from there:
`histories.load` has memory-mapped the dataset [H, T]; `select_histories`
keeps the training tasks' histories (a seeded set of tasks
is held out for validation) and, for Expert Distillation, marks where each
history's expert episodes begin; `sequence.model_inputs` turns each history
into model inputs; a window is L consecutive steps of one history, from a
uniformly random history and start, so it crosses episode boundaries but
never mixes two histories.

Two loaders, one sampling rule:
- `DeviceData` + `sample_windows`: the dataset lives on the device and windows
  are gathered there inside jit (grid worlds: megabytes, no host round trip).
- `stream_windows`: a grain pipeline reading windows from the memory-mapped
  shards with worker threads (pixels: datasets larger than device memory).
  Window g of the run is drawn from (seed, g), so the pipeline's position is
  the step number, resuming is exact, and each process reads only its slice.

Shape letters: see the glossary in algdist/__init__.py.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from algdist import histories, model, sequence, sharding
from algdist.agents import base

METHODS = ('ad', 'ed')


@dataclasses.dataclass(frozen=True)
class Selection:
  """Which histories train and validate, and where their windows may start."""

  train: np.ndarray  # [H_train] history rows of the training set
  validation: np.ndarray  # [H_val] history rows of the held-out tasks
  first_step: np.ndarray  # [H] first step a window may start at
  length: np.ndarray  # [H] valid steps of each history


def episode_starts(episode_start_T: np.ndarray, length: int) -> np.ndarray:
  """Step indices where episodes begin, within the valid `length` steps."""
  return np.flatnonzero(np.asarray(episode_start_T[:length]))


def select_histories(
  dataset: histories.Dataset,
  *,
  window_steps: int,
  validation_tasks: float,
  expert_episodes: int,
  seed: int,
) -> Selection:
  """Splits histories by task into train/validation and bounds window starts.

  `validation_tasks` is the fraction of the dataset's tasks held out (at
  least one when > 0). `expert_episodes` > 0 keeps only each history's last
  that many episodes (Expert Distillation); 0 keeps the whole history (AD).
  """
  manifest, history = dataset.manifest, dataset.history
  length_H, task_index_H = dataset.length, dataset.task_index
  if manifest['spec']['split'] != 'train':
    raise ValueError(
      'Only histories of training tasks may be trained on; this dataset was '
      f"generated on the '{manifest['spec']['split']}' split."
    )
  num_tasks = int(manifest['num_tasks'])
  num_val = 0
  if validation_tasks > 0:
    num_val = max(1, int(round(validation_tasks * num_tasks)))
  if num_val >= num_tasks:
    raise ValueError(
      f'data.validation_tasks={validation_tasks} holds out {num_val} of '
      f'{num_tasks} tasks, leaving none to train on.'
    )
  val_tasks = np.random.default_rng(seed).permutation(num_tasks)[:num_val]
  is_val = np.isin(task_index_H, val_tasks)
  length_H = np.asarray(length_H)
  first = np.zeros_like(length_H)
  if expert_episodes > 0:
    starts = np.asarray(history.episode_start)
    for h in range(length_H.shape[0]):
      begins = episode_starts(starts[h], int(length_H[h]))
      if len(begins) < expert_episodes:
        raise ValueError(
          f'History {h} has {len(begins)} episodes; ed.expert_episodes='
          f'{expert_episodes} needs at least that many.'
        )
      first[h] = begins[-expert_episodes]
  span = length_H - first
  if span.min() < window_steps:
    h = int(np.argmin(span))
    raise ValueError(
      f'History {h} offers {int(span[h])} steps to window, fewer than '
      f'data.window_steps={window_steps}. Shorten the windows, raise '
      'ed.expert_episodes (for ED), or generate longer histories.'
    )
  return Selection(
    train=np.flatnonzero(~is_val),
    validation=np.flatnonzero(is_val),
    first_step=first.astype(np.int32),
    length=length_H.astype(np.int32),
  )


@struct.dataclass
class DeviceData:
  """A dataset resident on the device: model inputs of whole histories."""

  steps: sequence.Steps  # leaves [H, T, ...]
  target: jax.Array  # [H, T] int32 the action to predict
  first_step: jax.Array  # [H] int32 earliest window start
  last_start: jax.Array  # [H] int32 latest window start (length - L)


def device_data(
  history: base.History,
  rows: np.ndarray,
  selection: Selection,
  num_actions: int,
  window_steps: int,
) -> DeviceData:
  """Model inputs of histories `rows`, copied to the default device(s)."""
  sub = jax.tree.map(lambda x: np.asarray(x[rows]), history)
  steps, target = sequence.model_inputs(sub, num_actions)
  return DeviceData(
    steps=jax.tree.map(jnp.asarray, steps),
    target=jnp.asarray(target),
    first_step=jnp.asarray(selection.first_step[rows]),
    last_start=jnp.asarray(selection.length[rows] - window_steps),
  )


def _draw(key: jax.Array, first, last, batch: int, first_window_prob: float):
  """Random (history, start) pairs: a uniform history, a uniform start (the
  history's first step with probability `first_window_prob`)."""
  key_h, key_s, key_f = jax.random.split(key, 3)
  h_B = jax.random.randint(key_h, (batch,), 0, first.shape[0])
  start_B = jax.random.randint(key_s, (batch,), first[h_B], last[h_B] + 1)
  if first_window_prob > 0:  # static: at 0 the uniform draw is skipped
    at_first = jax.random.uniform(key_f, (batch,)) < first_window_prob
    start_B = jnp.where(at_first, first[h_B], start_B)
  return h_B, start_B


def sample_windows(
  key: jax.Array,
  data: DeviceData,
  batch: int,
  context: int,
  first_window_prob: float = 0.0,
):
  """`batch` random windows of `context` steps: (Steps, target), [B, L].

  A uniform start rarely hits a history's first step, the empty context an
  evaluation rollout starts from; `first_window_prob` puts that share of
  windows there (data.first_window_prob).
  """
  h_B, start_B = _draw(
    key, data.first_step, data.last_start, batch, first_window_prob
  )

  def window(x):
    take = lambda h, s: jax.lax.dynamic_slice_in_dim(x[h], s, context)
    return jax.vmap(take)(h_B, start_B)

  return jax.tree.map(window, (data.steps, data.target))


@functools.partial(jax.jit, static_argnums=(2, 3, 4))
def fixed_windows(key, data: DeviceData, num: int, batch: int, context: int):
  """`num` windows drawn once, as [num // batch] batches (validation).

  Jitted: run op by op, the draw compiled some fifty small programs (1.5 s
  of every training run's start).
  """
  steps, target = sample_windows(key, data, num - num % batch, context)
  split = lambda x: x.reshape((-1, batch) + x.shape[1:])
  return jax.tree.map(split, (steps, target))


class WindowSource:
  """Random access to windows read from memory-mapped histories.

  Element g is the window of global index g (step * global batch + position
  in the batch): its history and start come from a generator seeded with
  (seed, g), the same rule as `sample_windows` in law, if not in bits.
  """

  def __init__(
    self,
    history,
    rows,
    selection,
    num_actions,
    context,
    seed,
    first_window_prob: float = 0.0,
  ):
    self._first_window_prob = first_window_prob
    self._history = history
    self._rows = np.asarray(rows)
    self._first = selection.first_step[self._rows]
    self._last = selection.length[self._rows] - context
    self._num_actions = num_actions
    self._context = context
    self._seed = seed

  def __len__(self) -> int:
    return 2**62  # endless: training asks for as many windows as it needs

  def __getitem__(self, g: int):
    rng = np.random.default_rng((self._seed, int(g)))
    i = int(rng.integers(len(self._rows)))
    start = int(rng.integers(self._first[i], self._last[i] + 1))
    if self._first_window_prob > 0 and rng.random() < self._first_window_prob:
      start = int(self._first[i])
    # One step before the window, so step `start` gets its real a_{t-1}.
    lo = max(start - 1, 0)
    raw = jax.tree.map(
      lambda x: np.asarray(x[self._rows[i], lo : start + self._context]),
      self._history,
    )
    steps, target = sequence.model_inputs(raw, self._num_actions)
    cut = lambda x: np.asarray(x)[start - lo :]
    return jax.tree.map(cut, (steps, target))


def stream_windows(
  source: WindowSource,
  *,
  global_batch: int,
  start_step: int,
  rows=None,
  num_threads: int = 4,
):
  """An iterator of this process's batches from `start_step` on (grain):
  the `rows` of each global batch (default all) that its devices hold."""
  import grain  # noqa: PLC0415  (only streamed datasets need it)

  rows = np.arange(global_batch) if rows is None else np.asarray(rows)
  local = len(rows)

  def index(i):  # i-th window of this process -> its global index
    step, j = divmod(i, local)
    return step * global_batch + int(rows[j])

  dataset = (
    grain.MapDataset.range(start_step * local, 2**40)
    .map(index)
    .map(source.__getitem__)
    .batch(local, batch_fn=_stack)
  )
  options = grain.ReadOptions(
    num_threads=num_threads, prefetch_buffer_size=2 * local
  )
  return iter(dataset.to_iter_dataset(options))


def process_rows(layout, global_batch: int, devices=None) -> np.ndarray:
  """Rows of a global batch that `devices` (default: this process's) hold
  under `layout` (a sharding of the batch axis), ascending.

  Read from the layout, not assumed: with a mesh axis that spans processes
  and replicates the batch, two processes hold the same rows.
  """
  where = layout.devices_indices_map((global_batch,))
  devices = layout.addressable_devices if devices is None else devices
  held = set()
  for device in devices:
    held.update(range(global_batch)[where[device][0]])
  return np.array(sorted(held), np.int64)


def _stack(items):
  return jax.tree.map(lambda *xs: np.stack(xs), *items)


def dataset_bytes(history: base.History, rows: np.ndarray) -> int:
  """Bytes that `rows` of the history occupy as model inputs (about)."""
  per_row = sum(
    int(np.prod(x.shape[1:])) * x.dtype.itemsize
    for x in jax.tree.leaves(history)
  )
  return per_row * len(rows) + len(rows) * history.action.shape[1] * 8


@dataclasses.dataclass(frozen=True)
class Pipeline:
  """What training reads: the batch of each update, the validation set."""

  # update -> its global (Steps, target) batch [B, L], sharded over the mesh
  next_batch: Callable
  # Traceable step -> the same batch, for sampling inside a jitted chunk of
  # updates; None for a streamed dataset (read on the host, one per update).
  sample: Callable | None
  validation: tuple | None  # fixed held-out (Steps, target) [batches, B, L]
  window_steps: int  # L: steps per training window (>= context_steps)


def make_pipeline(
  config,
  dataset: histories.Dataset,
  method: str,
  model_config: model.ModelConfig,
  obs: jax.ShapeDtypeStruct,
  mesh: jax.sharding.Mesh,
  rules: tuple,
  start_step: int,
) -> Pipeline:
  """The input pipeline of training `method` from update `start_step` on.

  On the device, windows are gathered inside jit from fold_in(key, step); a
  streamed dataset is read by grain from `start_step` on. Either way the
  batch of an update depends only on the step, so a resumed run sees the
  batches an uninterrupted one would have.
  """
  history = dataset.history
  if history.obs.shape[2:] != obs.shape or history.obs.dtype != obs.dtype:
    raise histories.DatasetError(
      f'The histories in {dataset.directory} hold observations of shape '
      f'{history.obs.shape[2:]} {history.obs.dtype}; {config.env.name} with '
      f'this config observes {obs.shape} {obs.dtype}. Regenerate them.'
    )
  window = run_window_steps(config, model_config)
  selection = select_histories(
    dataset,
    window_steps=window,
    validation_tasks=config.data.validation_tasks,
    expert_episodes=expert_episodes(config, method),
    seed=config.data.seed,
  )
  num_actions, batch_size = model_config.num_actions, config.train.batch_size
  shard = lambda x: sharding.batch_sharding(mesh, rules, x.ndim)
  if _on_device(config, history, selection.train):
    train_data = device_data(
      history, selection.train, selection, num_actions, window
    )
    data_key = jax.random.fold_in(jax.random.key(config.train.seed), 1)

    # Every name `sample` reads is bound once: jit traces it again for each
    # new argument type (a Python int, an int32 array), and a name rebound
    # after this point would be read then.
    def sample(step):
      key = jax.random.fold_in(data_key, step)
      batch = sample_windows(
        key, train_data, batch_size, window, config.data.first_window_prob
      )
      # Laid out as a streamed batch would be, also when traced inside the
      # training chunk.
      return jax.lax.with_sharding_constraint(batch, jax.tree.map(shard, batch))

    shapes = jax.eval_shape(sample, 0)
    next_batch = jax.jit(sample, out_shardings=jax.tree.map(shard, shapes))
  else:
    sample = None
    source = WindowSource(
      history,
      selection.train,
      selection,
      num_actions,
      window,
      seed=config.train.seed,
      first_window_prob=config.data.first_window_prob,
    )
    # Every leaf's layout splits the batch axis alike: rows from a 1-D one.
    mine = process_rows(shard(np.zeros(1)), batch_size)
    stream = stream_windows(
      source,
      global_batch=batch_size,
      start_step=start_step,
      rows=mine,
      num_threads=config.data.num_threads,
    )

    def next_batch(step):
      del step  # the stream started at start_step and advances one per call
      # JAX maps this process's rows (ascending) onto its devices' pieces;
      # the global shape is explicit, as a replicated batch needs it.
      to_global = lambda x: jax.make_array_from_process_local_data(
        shard(x), x, (batch_size, *x.shape[1:])
      )
      return jax.tree.map(to_global, next(stream))

  validation = None
  rows = selection.validation
  if len(rows) and config.data.num_validation_windows > 0:
    # Fixed windows of the held-out tasks' histories.
    held_out = device_data(history, rows, selection, num_actions, window)
    num = max(config.data.num_validation_windows, batch_size)
    validation = fixed_windows(
      jax.random.key(config.data.seed), held_out, num, batch_size, window
    )
  return Pipeline(next_batch, sample, validation, window)


def run_window_steps(config, model_config: model.ModelConfig) -> int:
  """Steps per training window: at least the model's attention span.

  Windows longer than the span train the sliding-window attention that the
  evaluation KV cache runs: there, after the ring buffer wraps, the oldest
  cached keys of deeper layers were computed with context of their own, a
  case that windows no longer than the span never show the model.
  """
  steps = config.data.window_steps
  if steps < model_config.context_steps:
    raise ValueError(
      f'data.window_steps={steps} must be >= model.context_steps='
      f'{model_config.context_steps}.'
    )
  return steps


def expert_episodes(config, method: str) -> int:
  """Expert episodes kept per history: ED's, or 0 (AD keeps them all)."""
  if method not in METHODS:
    raise ValueError(f"Unknown method '{method}'; use one of {METHODS}.")
  return config.ed.expert_episodes if method == 'ed' else 0


def _on_device(config, history: base.History, rows: np.ndarray) -> bool:
  placement = config.data.placement
  if placement not in ('auto', 'device', 'stream'):
    raise ValueError(
      f"data.placement='{placement}': use 'auto', 'device' or 'stream'."
    )
  if placement != 'auto':
    return placement == 'device'
  return dataset_bytes(history, rows) <= config.data.max_device_mb * 2**20
