"""Meshes and shardings: declared in the config, derived here.

The model names the axes of its parameters and activations logically
('batch', 'embed', 'mlp', ...); the config maps those names to mesh axes
(`config.sharding.rules`) and gives the mesh's shape. Default: one 'data'
axis over every device, which shards the batch and, FSDP-style, the largest
parameter dimensions ('mlp', 'vocab' rows stay replicated: they are small).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

Rules = Sequence[tuple[str, str | tuple[str, ...] | None]]


def config_mesh(section, devices=None) -> tuple[Mesh, tuple]:
  """`(mesh, rules)` as a config's sharding section declares them."""
  mesh = make_mesh(
    section.mesh_shape, section.mesh_axes, devices, section.dcn_mesh_shape
  )
  return mesh, tuple(tuple(r) for r in section.rules)


def make_mesh(
  shape: Sequence[int], axes: Sequence[str], devices=None, dcn_shape=()
) -> Mesh:
  """A mesh of `shape` over `devices` (default all); one -1 takes the rest.

  With `dcn_shape`, a hybrid mesh: axis i spans dcn_shape[i] granules (TPU
  slices, GPU machines, CPU processes: `_granules`) times shape[i] devices
  of one granule, so that only the axes with dcn_shape[i] > 1 cross the
  slow network.
  """
  devices = jax.devices() if devices is None else list(devices)
  auto = (jax.sharding.AxisType.Auto,) * len(axes)
  if dcn_shape:
    return _hybrid_mesh(shape, axes, devices, tuple(dcn_shape), auto)
  shape = _resolve(shape, axes, len(devices))
  # Auto axes: the compiler propagates shardings from the declared inputs,
  # outputs and constraints (what pjit did), rather than every op's types.
  return jax.make_mesh(
    tuple(shape), tuple(axes), axis_types=auto, devices=devices
  )


def _hybrid_mesh(shape, axes, devices, dcn_shape, axis_types) -> Mesh:
  from jax.experimental import mesh_utils  # noqa: PLC0415

  if len(dcn_shape) != len(axes):
    raise ValueError(
      f'sharding.dcn_mesh_shape {dcn_shape} and sharding.mesh_axes '
      f'{tuple(axes)} must have the same length.'
    )
  kind, key = _granules(devices)
  granules = {}
  for d in devices:
    granules.setdefault(key(d), []).append(d)
  if int(np.prod(dcn_shape)) != len(granules):
    raise ValueError(
      f'sharding.dcn_mesh_shape {dcn_shape} asks for '
      f'{int(np.prod(dcn_shape))} granules; there are {len(granules)} '
      f'({kind}).'
    )
  shape = _resolve(shape, axes, len(devices) // len(granules))
  # Each granule's devices as a mesh of `shape` (laid out on its fast
  # interconnect), then granule-major blocks: axis i of the result is
  # dcn_shape[i] granules x shape[i] devices.
  inner = [
    mesh_utils.create_device_mesh(shape, granules[k]) for k in sorted(granules)
  ]
  stacked = np.stack(inner).reshape(*dcn_shape, *shape)
  n = len(shape)
  order = [k for i in range(n) for k in (i, n + i)]
  grid = stacked.transpose(order).reshape(
    [a * b for a, b in zip(dcn_shape, shape, strict=True)]
  )
  return Mesh(grid, tuple(axes), axis_types=axis_types)


def _granules(devices) -> tuple[str, Callable]:
  """What a granule is here, and the granule of a device: a TPU slice
  (slice_index); a GPU machine, whatever the processes on it (one per GPU
  under SLURM); a CPU process."""
  platform = devices[0].platform
  if platform == 'tpu':
    return 'slices', lambda d: d.slice_index
  if platform == 'cpu':
    return 'processes', lambda d: d.process_index
  import socket  # noqa: PLC0415
  import zlib  # noqa: PLC0415

  from jax.experimental import multihost_utils  # noqa: PLC0415

  mine = np.array([zlib.crc32(socket.gethostname().encode())], np.uint32)
  hosts = np.asarray(multihost_utils.process_allgather(mine)).reshape(-1)
  return 'machines', lambda d: int(hosts[d.process_index])


def _resolve(shape, axes, count: int) -> list[int]:
  """`shape` with its -1 filled in for `count` devices (checked)."""
  shape = list(shape)
  if len(shape) != len(axes):
    raise ValueError(
      f'sharding.mesh_shape {tuple(shape)} and sharding.mesh_axes '
      f'{tuple(axes)} must have the same length.'
    )
  if shape.count(-1) > 1:
    raise ValueError(f'sharding.mesh_shape {tuple(shape)} has several -1.')
  if -1 in shape:
    known = int(np.prod([s for s in shape if s != -1]))
    if count % known:
      raise ValueError(
        f'sharding.mesh_shape {tuple(shape)}: {count} devices do not divide '
        f'by {known}.'
      )
    shape[shape.index(-1)] = count // known
  if int(np.prod(shape)) != count:
    raise ValueError(
      f'sharding.mesh_shape {tuple(shape)} needs {int(np.prod(shape))} '
      f'devices; there are {count}. Use -1 for one axis to fill the rest.'
    )
  return shape


def _fit(spec: PartitionSpec, shape: Sequence[int], mesh: Mesh, name: str):
  """`spec` with axes dropped where they do not divide the dimension.

  A dimension that does not split evenly is replicated instead of failing:
  small heads and embeddings of toy models should not stop a run.
  """
  fitted = []
  padded = tuple(spec) + (None,) * (len(shape) - len(spec))
  for dim, axes in zip(shape, padded, strict=True):
    if axes is None:
      fitted.append(None)
      continue
    size = int(np.prod([mesh.shape[a] for a in np.atleast_1d(axes)]))
    if dim % size:
      logging.info(
        'Replicating %s: dim %d does not split %d ways.', name, dim, size
      )
      fitted.append(None)
    else:
      fitted.append(axes)
  return PartitionSpec(*fitted)


def tree_shardings(boxed_tree, mesh: Mesh, rules: Rules):
  """NamedShardings for a tree whose leaves may carry logical axis names.

  `boxed_tree` is typically `jax.eval_shape` of an init function whose
  parameters are `nn.LogicallyPartitioned`; unnamed leaves are replicated.
  Returns shardings shaped like `nn.meta.unbox(boxed_tree)`.
  """
  mesh_specs = nn.logical_to_mesh(nn.get_partition_spec(boxed_tree), rules)
  abstract = nn.meta.unbox(boxed_tree)

  def one(path, leaf, spec):
    name = jax.tree_util.keystr(path)
    return NamedSharding(mesh, _fit(spec, leaf.shape, mesh, name))

  return jax.tree.map_with_path(one, abstract, mesh_specs)


def batch_sharding(mesh: Mesh, rules: Rules, ndim: int) -> NamedSharding:
  """Shards the leading (batch) axis of an `ndim` array as 'batch' says."""
  (spec,) = nn.logical_to_mesh(
    [PartitionSpec('batch', *(None,) * (ndim - 1))], rules
  )
  return NamedSharding(mesh, spec)


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec())


def from_host(host, layout: jax.sharding.Sharding) -> jax.Array:
  """`host` (the same whole array on every process) as one array laid out
  as `layout`: each process places the pieces its own devices hold."""
  host = np.asarray(host)
  return jax.make_array_from_callback(host.shape, layout, host.__getitem__)


def to_host(array: jax.Array) -> np.ndarray:
  """The whole of a (possibly multi-process) array, on every process."""
  if array.is_fully_addressable:
    return np.asarray(array)
  from jax.experimental import multihost_utils  # noqa: PLC0415

  return np.asarray(multihost_utils.process_allgather(array, tiled=True))


def rows_mesh() -> Mesh:
  """Every device of every process on one axis, 'rows': work whose rows are
  independent (evaluation's rollouts) splits over all of them, whatever
  the training mesh was."""
  return make_mesh((-1,), ('rows',))


def replicate(tree, mesh: Mesh):
  """A copy of every leaf of `tree` on every device of `mesh`."""
  whole = replicated(mesh)
  return jax.tree.map(lambda x: from_host(x, whole), tree)


def map_rows(
  fn: Callable, keys_N, tree, per_device: int, mesh: Mesh
) -> np.ndarray:
  """`fn(keys, tree)` over chunks of rows (of `keys_N` [N, ...], a key
  array, and the leaves of `tree` [N, ...]), each chunk split over the
  devices of `mesh` (a `rows_mesh`; `per_device` rows each at most) ->
  numpy [N, ...], on every process. Every call has one shape (the last
  chunk padded), a multiple of the device count, so it compiles once.

  Where a row's output depends only on its own inputs (a rollout: its key
  and task), the split changes no result. That holds for threefry keys
  (JAX's default), not for 'rbg' ones, whose vmapped draws depend on the
  whole batch.
  """
  num, devices = keys_N.shape[0], mesh.size
  per_call = devices * -(-min(max(1, per_device) * devices, num) // devices)
  rows = NamedSharding(mesh, PartitionSpec('rows'))
  # Keys travel as their raw bits: each process places its devices' rows.
  impl = jax.random.key_impl(keys_N)
  key_data = np.asarray(jax.random.key_data(keys_N))
  tree = jax.tree.map(np.asarray, tree)
  outs = []
  for start in range(0, num, per_call):
    index = np.minimum(np.arange(start, start + per_call), num - 1)
    place = lambda x, i=index: from_host(x[i], rows)
    keys = jax.random.wrap_key_data(place(key_data), impl=impl)
    outs.append(to_host(fn(keys, jax.tree.map(place, tree)))[: num - start])
  return np.concatenate(outs, 0)
