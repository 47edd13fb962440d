"""Meshes and shardings: declared in the config, derived here.

The model names the axes of its parameters and activations logically
('batch', 'embed', 'mlp', ...); the config maps those names to mesh axes
(`config.sharding.rules`) and gives the mesh's shape. Default: one 'data'
axis over every device, which shards the batch and, FSDP-style, the largest
parameter dimensions ('mlp', 'vocab' rows stay replicated: they are small).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

Rules = Sequence[tuple[str, str | tuple[str, ...] | None]]


def make_mesh(shape: Sequence[int], axes: Sequence[str], devices=None) -> Mesh:
  """A mesh of `shape` over `devices` (default all); one -1 takes the rest."""
  devices = jax.devices() if devices is None else list(devices)
  shape = list(shape)
  if len(shape) != len(axes):
    raise ValueError(
      f'sharding.mesh_shape {tuple(shape)} and sharding.mesh_axes '
      f'{tuple(axes)} must have the same length.'
    )
  count = len(devices)
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
  # Auto axes: the compiler propagates shardings from the declared inputs,
  # outputs and constraints (what pjit did), rather than every op's types.
  auto = (jax.sharding.AxisType.Auto,) * len(axes)
  return jax.make_mesh(
    tuple(shape), tuple(axes), axis_types=auto, devices=devices
  )


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
