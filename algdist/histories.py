"""Learning-history datasets: generate, store, verify and load.

A dataset is H histories of T steps, streams on N tasks: each is one actor's
experience, in order, while its learner learns from scratch. Generation runs
many learners per jitted call (`jit(vmap(vmap(train)))` over tasks x learners)
and writes each call's output as one shard as soon as it finishes, so an
interrupted run keeps its finished shards and redoes only the rest.

On disk (`WORKDIR/histories/`):
  manifest.json            see `write_manifest`; `complete` turns true last
  shard_00000/obs.npy      [H, T, *O] in the env's dtype (pixels stay uint8)
              action.npy   [H, T] int32
              reward.npy   [H, T] float32
              episode_start.npy [H, T] bool
              length.npy   [H] int32 valid steps (T unless subsampled)
              task_index.npy [H] int32 row of the manifest's task table
Plain .npy files (no pickle): they memory-map, so a random window is read
without touching the rest of the file (the streamed loader relies on it).
Every file's sha256 is in the manifest and is checked on load.

Shape letters: see the glossary in algdist/__init__.py.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import re
import shutil
import time

import jax
import jax.numpy as jnp
import numpy as np

from algdist import agents, distributed, envs, files, metrics, rollout
from algdist.agents import base

SCHEMA_VERSION = 1
FIELDS = ('obs', 'action', 'reward', 'episode_start', 'length', 'task_index')
# Written only by a learner whose histories record it (base.History.target).
OPTIONAL_FIELDS = ('target',)


class DatasetError(RuntimeError):
  """A dataset on disk that cannot be used as it is."""


@dataclasses.dataclass(frozen=True)
class Spec:
  """Everything that determines a dataset; equal specs give equal bytes."""

  env: str  # task family name for algdist.envs.make
  env_overrides: dict  # EnvParams fields to override
  split: str  # 'train' or 'test' tasks
  algorithm: str  # source algorithm name for algdist.agents.get
  algorithm_config: dict  # overrides of that algorithm's default config
  num_tasks: int  # distinct tasks, drawn from the split
  learners_per_task: int  # independent learners on each task
  learners_per_shard: int  # learners per jitted call and per shard file
  subsample_every: int  # keep every k-th episode (1 keeps all)
  seed: int  # drives tasks, learners and everything random

  def fingerprint(self) -> dict:
    return json.loads(json.dumps(dataclasses.asdict(self)))


def subsample_episodes(history: base.History, every: int):
  """Keeps episodes 0, k, 2k, ... of one stream [T], packed at the front.

  Returns (history, length): steps past `length` are padding (zeros).
  """
  episode = jnp.cumsum(history.episode_start) - 1
  keep = episode % every == 0
  order = jnp.argsort(~keep, stable=True)
  length = keep.sum().astype(jnp.int32)
  valid = jnp.arange(keep.shape[0]) < length

  def pack(x):
    x = x[order]
    mask = valid.reshape((-1,) + (1,) * (x.ndim - 1))
    return jnp.where(mask, x, jnp.zeros_like(x))

  return jax.tree.map(pack, history), length


def _make_generate_shard(spec: Spec, env, algorithm_config, make_train):
  """A jitted `fn(key, tasks[L]) -> History [L*A, T]` for L learners."""
  train = make_train(algorithm_config, env)

  def learner_streams(key, task):
    _, history = train(key, task)  # [H, T, ...]
    if spec.subsample_every > 1:
      return jax.vmap(lambda h: subsample_episodes(h, spec.subsample_every))(
        history
      )
    steps = history.action.shape[-1]
    return history, jnp.full(history.action.shape[:1], steps, jnp.int32)

  def generate_shard(key, tasks):
    num = jax.tree.leaves(tasks)[0].shape[0]
    keys = jax.random.split(key, num)
    history, length = jax.vmap(learner_streams)(keys, tasks)  # [L, A, ...]
    flat = lambda x: x.reshape((-1,) + x.shape[2:])
    return jax.tree.map(flat, history), flat(length)

  return jax.jit(generate_shard)


def _sha256(path: str) -> str:
  digest = hashlib.sha256()
  with open(path, 'rb') as f:
    for block in iter(lambda: f.read(1 << 22), b''):
      digest.update(block)
  return digest.hexdigest()


def _shard_entry(directory: str, name: str) -> dict:
  """A written shard's manifest entry, from its files."""
  shard = os.path.join(directory, name)
  names = sorted(os.listdir(shard))
  action = np.load(os.path.join(shard, 'action.npy'), mmap_mode='r')
  return {
    'name': name,
    'num_histories': int(action.shape[0]),
    'files': {
      f: {
        'sha256': _sha256(os.path.join(shard, f)),
        'bytes': os.path.getsize(os.path.join(shard, f)),
      }
      for f in names
    },
  }


def _write_shard(directory: str, name: str, arrays: dict) -> dict:
  """Writes one shard's arrays atomically; returns its manifest entry."""
  final = os.path.join(directory, name)
  tmp = final + '.tmp'
  shutil.rmtree(tmp, ignore_errors=True)
  os.makedirs(tmp)
  for field, array in arrays.items():
    path = os.path.join(tmp, f'{field}.npy')
    np.save(path, array, allow_pickle=False)
    with open(path, 'rb+') as f:
      os.fsync(f.fileno())
  shutil.rmtree(final, ignore_errors=True)
  os.replace(tmp, final)
  return _shard_entry(directory, name)


def _task_table(env, params, tasks) -> dict:
  """Task leaves as JSON lists, one row per task."""
  fields = [
    f.name
    for f in dataclasses.fields(params)
    if f.metadata.get('pytree_node', True)
  ]
  return {f: np.asarray(getattr(tasks, f)).tolist() for f in fields}


def generate(spec: Spec, directory: str, progress: bool = True) -> dict:
  """Generates (or finishes) the dataset of `spec` in `directory`.

  Shards already written for the same spec are kept; a directory holding a
  dataset of another spec raises DatasetError rather than mixing the two.
  In a multi-process run process p writes shards p, p + P, ... (a shard
  depends only on its key: the same bytes whoever writes it), and process
  0 lists them all in the manifest after a barrier. Returns the manifest.
  """
  os.makedirs(directory, exist_ok=True)
  env, params = envs.make(spec.env, **spec.env_overrides)
  algorithm_config, make_train = agents.get(
    spec.algorithm, **spec.algorithm_config
  )
  tasks = env.tasks(params, spec.split, num=spec.num_tasks, seed=spec.seed)
  num_learners = spec.num_tasks * spec.learners_per_task
  num_shards = -(-num_learners // spec.learners_per_shard)
  # Learner i works on task i // learners_per_task.
  learner_task = np.repeat(np.arange(spec.num_tasks), spec.learners_per_task)

  manifest = _resume_manifest(spec, directory)
  if manifest is not None and manifest['complete']:
    return manifest
  if manifest is None:
    manifest = {
      'schema_version': SCHEMA_VERSION,
      'complete': False,
      'spec': spec.fingerprint(),
      'env': spec.env,
      'algorithm': spec.algorithm,
      'algorithm_config': dataclasses.asdict(algorithm_config),
      'num_tasks': spec.num_tasks,
      'num_shards': num_shards,
      'tasks': _task_table(env, params, tasks),
      'shards': [],
    }
  done = {s['name'] for s in manifest['shards']}
  generate_shard = _make_generate_shard(spec, env, algorithm_config, make_train)
  root = jax.random.key(spec.seed)
  todo = [
    i
    for i in range(num_shards)
    if f'shard_{i:05d}' not in done
    and i % jax.process_count() == jax.process_index()
  ]
  start = time.perf_counter()
  steps_done = 0
  with metrics.progress(
    num_shards, len(done), progress, 'histories', 'shard'
  ) as bar:
    for n, i in enumerate(todo, len(done) + 1):
      # Pad the last shard to full size, so that every call has one shape.
      ids = np.arange(
        i * spec.learners_per_shard, (i + 1) * spec.learners_per_shard
      )
      real = ids < num_learners
      task_ids = learner_task[np.minimum(ids, num_learners - 1)]
      shard_tasks = jax.tree.map(lambda x, ids=task_ids: x[ids], tasks)
      history, length = generate_shard(jax.random.fold_in(root, i), shard_tasks)
      history, length = jax.device_get((history, length))
      per_learner = length.shape[0] // len(ids)
      keep = np.repeat(real, per_learner)
      arrays = {
        'obs': history.obs[keep],
        'action': history.action[keep],
        'reward': history.reward[keep],
        'episode_start': history.episode_start[keep],
        'length': length[keep],
        'task_index': np.repeat(task_ids, per_learner)[keep].astype(np.int32),
      }
      if history.target is not None:
        arrays['target'] = history.target[keep]
      entry = _write_shard(directory, f'shard_{i:05d}', arrays)
      manifest['shards'].append(entry)
      manifest['shards'].sort(key=lambda s: s['name'])
      files.write_json(os.path.join(directory, 'manifest.json'), manifest)
      steps_done += int(history.action[keep].size)
      steps_per_s = steps_done / (time.perf_counter() - start)
      bar(n, f'{steps_per_s:,.0f} env steps/s')

  distributed.barrier('histories_written')
  if jax.process_count() > 1:
    if jax.process_index() != 0:  # process 0 writes the manifest
      distributed.barrier('histories_listed')
      return read_manifest(directory)
    listed = {s['name'] for s in manifest['shards']}
    manifest['shards'] += [
      _shard_entry(directory, f'shard_{i:05d}')
      for i in range(num_shards)
      if f'shard_{i:05d}' not in listed
    ]
    manifest['shards'].sort(key=lambda s: s['name'])
  num_histories = sum(s['num_histories'] for s in manifest['shards'])
  first = np.load(
    os.path.join(directory, manifest['shards'][0]['name'], 'action.npy'),
    mmap_mode='r',
  )
  manifest.update(
    complete=True,
    num_histories=int(num_histories),
    steps_per_history=int(first.shape[1]),
    streams_per_task=int(num_histories // spec.num_tasks),
    seconds=manifest.get('seconds', 0.0) + time.perf_counter() - start,
  )
  files.write_json(os.path.join(directory, 'manifest.json'), manifest)
  distributed.barrier('histories_listed')
  return manifest


def read_manifest(directory: str) -> dict | None:
  """`directory`'s manifest.json, or None when there is none. Garbage, or a
  shard that is not a shard_NNNNN folder of `directory` holding FIELDS'
  files (a path leading elsewhere), raises naming the file."""
  path = os.path.join(directory, 'manifest.json')
  remedy = f'Delete {directory} and run --mode generate again.'
  manifest = files.read_json(path, remedy=remedy)
  allowed = {f'{field}.npy' for field in FIELDS + OPTIONAL_FIELDS}
  shards = [] if manifest is None else manifest.get('shards')
  for shard in shards if isinstance(shards, list) else [{}]:
    name, names = (
      shard.get(k) if isinstance(shard, dict) else None
      for k in ('name', 'files')
    )
    if not (
      re.fullmatch(r'shard_\d{5}', str(name))
      and isinstance(names, dict)
      and set(names) <= allowed
    ):
      raise DatasetError(
        f'{path} lists a shard {name!r} with files {names!r}, not a '
        f'shard_NNNNN folder of it holding {sorted(allowed)}. {remedy}'
      )
  return manifest


def _resume_manifest(spec: Spec, directory: str) -> dict | None:
  """The manifest to continue from, or None to start afresh."""
  manifest = read_manifest(directory)
  if manifest is None:
    return None
  if manifest.get('spec') != spec.fingerprint():
    raise DatasetError(
      f'{directory} holds a dataset generated with another configuration '
      f'(spec {manifest.get("spec")}); use another workdir, or delete '
      f'{directory} to regenerate it with this one.'
    )
  # Keep only shards whose files are all there at their recorded size; a
  # shard left half-written by a kill is regenerated.
  kept = []
  for shard in manifest['shards']:
    shard_dir = os.path.join(directory, shard['name'])
    if all(
      os.path.exists(os.path.join(shard_dir, name))
      and os.path.getsize(os.path.join(shard_dir, name)) == info['bytes']
      for name, info in shard['files'].items()
    ):
      kept.append(shard)
    else:
      logging.warning('Regenerating incomplete shard %s.', shard['name'])
  # A complete dataset with every shard in place is finished: keep it as it
  # is (a rerun skips the stage); otherwise finish it.
  manifest['complete'] = manifest.get('complete', False) and len(kept) == len(
    manifest['shards']
  )
  manifest['shards'] = kept
  return manifest


@dataclasses.dataclass(frozen=True)
class Dataset:
  """A loaded dataset: host arrays, memory-mapped unless loaded otherwise."""

  directory: str  # where it was loaded from
  manifest: dict  # manifest.json (see `generate`)
  history: base.History  # leaves [H, T, ...]
  length: np.ndarray  # [H] int32 valid steps of each history
  task_index: np.ndarray  # [H] int32 row of the manifest's task table


def load(directory: str, verify: bool = True, mmap: bool = True) -> Dataset:
  """Loads a complete dataset.

  Arrays are [num_histories, T, ...]; with `mmap` they stay on disk until
  read. `verify` checks every file's size and sha256 against the manifest and
  raises DatasetError naming the bad shard and what to do.
  """
  manifest = read_manifest(directory)
  if manifest is None:
    raise DatasetError(
      f'No dataset at {directory} (no manifest.json); run '
      '`python -m algdist.main --mode generate` first.'
    )
  if not manifest.get('complete'):
    raise DatasetError(
      f'The dataset at {directory} is incomplete ({len(manifest["shards"])}'
      f' of {manifest["num_shards"]} shards); run --mode generate again '
      'to finish it.'
    )
  if manifest.get('schema_version') != SCHEMA_VERSION:
    raise DatasetError(
      f'{directory} has schema version {manifest.get("schema_version")}, '
      f'this code reads {SCHEMA_VERSION}; regenerate the dataset.'
    )
  parts = {field: [] for field in FIELDS + OPTIONAL_FIELDS}
  for shard in manifest['shards']:
    shard_dir = os.path.join(directory, shard['name'])
    for name, info in shard['files'].items():
      file = os.path.join(shard_dir, name)
      if verify:
        _verify_file(shard['name'], file, info)
      array = np.load(file, mmap_mode='r' if mmap else None, allow_pickle=False)
      parts[name.removesuffix('.npy')].append(array)
  joined = {
    k: v[0] if len(v) == 1 else np.concatenate(v) for k, v in parts.items() if v
  }
  history = base.History(
    obs=joined['obs'],
    action=joined['action'],
    reward=joined['reward'],
    episode_start=joined['episode_start'],
    target=joined.get('target'),
  )
  return Dataset(
    directory=directory,
    manifest=manifest,
    history=history,
    length=joined['length'],
    task_index=joined['task_index'],
  )


def _verify_file(shard: str, file: str, info: dict) -> None:
  fix = (
    f'Delete {os.path.dirname(file)} and run --mode generate again: '
    'only that shard is regenerated.'
  )
  if not os.path.exists(file):
    raise DatasetError(f'Shard {shard}: {file} is missing. {fix}')
  size = os.path.getsize(file)
  if size != info['bytes']:
    raise DatasetError(
      f'Shard {shard}: {file} has {size} bytes, the manifest says '
      f'{info["bytes"]} (truncated or overwritten). {fix}'
    )
  if _sha256(file) != info['sha256']:
    raise DatasetError(
      f'Shard {shard}: {file} fails its sha256 checksum (corrupted). {fix}'
    )


def episode_return_curve(
  history: base.History,
  length,
  num_episodes: int,
  max_episode_steps: int | None = None,
):
  """Return of each of the first `num_episodes` episodes, per history [H, E].

  Episodes past a history's end are NaN, and so is a last episode cut off
  by the end of the history: one shorter than `max_episode_steps` (with
  None, the last episode always counts). An episode that ended early on the
  history's very last step is indistinguishable from a cut one, and is
  dropped too.
  """

  def one(h, n):
    return rollout.stream_episode_returns(h, num_episodes, max_episode_steps, n)

  small = base.History(
    obs=jnp.zeros(history.action.shape, jnp.int8),
    action=history.action,
    reward=history.reward,
    episode_start=history.episode_start,
  )
  return jax.jit(jax.vmap(one))(small, length)


def spec_from_config(config) -> Spec:
  """The dataset `Spec` of an experiment config (the orchestration layer)."""
  return Spec(
    env=config.env.name,
    env_overrides=config.env.overrides.to_dict(),
    split='train',
    algorithm=config.source.algorithm,
    algorithm_config=config.source.config.to_dict(),
    num_tasks=config.histories.num_tasks,
    learners_per_task=config.histories.learners_per_task,
    learners_per_shard=config.histories.learners_per_shard,
    subsample_every=config.histories.subsample_every,
    seed=config.histories.seed,
  )
