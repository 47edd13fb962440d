"""Ahead of time: a config's training step compiled for devices it need not
have, with each device's memory and the parameters' shardings.

  python -m algdist.aot --config configs/dark_room.py:paper
  python -m algdist.aot --config configs/dark_room.py:paper --topology v5e:4x4

Without `--topology` the step compiles for this machine's devices; with one,
for a TPU slice described by name (`jax.experimental.topologies`; needs
libtpu, e.g. `pip install ".[tpu]"`, but no TPU): whether a preset fits a
pod's memory, and how its parameters split, is known before a job is
queued. Prints one JSON object (`compile_train_step`).
"""

from __future__ import annotations

import argparse
import json

import jax
import numpy as np

from algdist import config_lib, model, sequence, sharding, train


def topology_devices(name: str) -> list:
  """Compile-only devices of TPU topology `name` (e.g. 'v5e:4x4')."""
  from jax.experimental import topologies  # noqa: PLC0415

  return list(topologies.get_topology_desc(name, 'tpu').devices)


def compile_train_step(config, devices=None) -> dict:
  """One training update of `config` (its model, optimizer, batch and
  mesh), lowered and compiled for `devices` (default: this process's).

  Returns the platform and device count, the mesh, the parameter count,
  each device's memory in bytes as XLA plans it (`memory_analysis`: inputs,
  outputs, temporaries, code) and each parameter's PartitionSpec.
  """
  devices = jax.devices() if devices is None else list(devices)
  config = config.copy_and_resolve_references()
  if config.model.dtype == 'auto':  # as on the devices, not this host
    config.model.dtype = (
      'float32' if devices[0].platform == 'cpu' else 'bfloat16'
    )
  cfg, obs = config_lib.model_config(config)
  net = model.Transformer(cfg)
  optimizer, schedule = train.make_optimizer(config.train)
  mesh, rules = sharding.config_mesh(config.sharding, devices)
  batch, steps = config.train.batch_size, config.data.window_steps

  def example_batch():
    zeros = lambda *shape, dtype=np.int32: np.zeros(shape, dtype)
    inputs = sequence.make_step(
      zeros(batch, steps, *obs.shape, dtype=obs.dtype),
      zeros(batch, steps),
      zeros(batch, steps, dtype=np.float32),
      zeros(batch, steps, dtype=bool),
    )
    return inputs, zeros(batch, steps)

  place = lambda a: jax.ShapeDtypeStruct(
    a.shape, a.dtype, sharding=sharding.batch_sharding(mesh, rules, a.ndim)
  )
  # The state's layout is made outside the mesh: under it, every concrete
  # array (the example inputs, the init key) would be placed on devices
  # that may exist only to be compiled for.
  inputs = model.example_steps(cfg, obs.shape, obs.dtype)
  _, state = train.state_layout(net, optimizer, inputs, mesh, rules)
  with jax.set_mesh(mesh):
    batch_shapes = jax.tree.map(place, jax.eval_shape(example_batch))
    step = jax.jit(
      train.make_train_step(net, optimizer, schedule), donate_argnums=0
    )
    compiled = step.lower(state, batch_shapes).compile()
  memory = compiled.memory_analysis()
  fields = ('argument', 'output', 'temp', 'alias', 'generated_code')
  specs = jax.tree_util.tree_flatten_with_path(state.params)[0]
  return {
    'platform': devices[0].platform,
    'device_kind': devices[0].device_kind,
    'devices': len(devices),
    'mesh': dict(mesh.shape),
    'params': model.num_params(state.params),
    'dtype': cfg.dtype,
    'tokens_per_update': batch * steps,
    'bytes_per_device': {
      f: int(getattr(memory, f'{f}_size_in_bytes', 0) or 0) for f in fields
    },
    'param_shardings': {
      jax.tree_util.keystr(path): str(leaf.sharding.spec)
      for path, leaf in specs
    },
  }


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument(
    '--config', required=True, help='configs/<env>.py[:preset]'
  )
  parser.add_argument(
    '--topology', default='', help="TPU slice, e.g. 'v5e:4x4'"
  )
  args = parser.parse_args(argv)
  path, _, preset = args.config.partition(':')
  name = path.removeprefix('configs/').removesuffix('.py')
  devices = topology_devices(args.topology) if args.topology else None
  print(
    json.dumps(
      compile_train_step(config_lib.load_config(name, preset or None), devices)
    )
  )


if __name__ == '__main__':
  main()
