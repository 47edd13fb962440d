"""Ahead-of-time compilation for devices this machine lacks (algdist.aot)."""

import importlib.util

import jax
import pytest

from algdist import aot
from configs import dark_room


def test_the_step_compiles_for_the_mesh_and_shards_what_the_rules_say():
  config = dark_room.get_config('smoke')
  eight = aot.compile_train_step(config)  # the 8 fake CPU devices
  one = aot.compile_train_step(config, jax.devices()[:1])
  assert (eight['devices'], eight['mesh']) == (8, {'data': 8})
  assert eight['params'] == one['params'] > 0
  # FSDP-style: the feed-forward weights split over 'data', the rest whole.
  sharded = {k for k, v in eight['param_shardings'].items() if 'data' in v}
  assert sharded and all("['mlp']" in k for k in sharded)
  # Each device holds an eighth of the batch and of the sharded weights.
  assert (
    eight['bytes_per_device']['argument'] < one['bytes_per_device']['argument']
  )
  assert eight['tokens_per_update'] == 8 * 30  # batch 8 x 30-step windows


@pytest.mark.skipif(
  importlib.util.find_spec('libtpu') is None, reason='needs libtpu (.[tpu])'
)
def test_the_paper_preset_compiles_for_a_tpu_pod_slice_without_one():
  row = aot.compile_train_step(
    dark_room.get_config('paper'), aot.topology_devices('v5e:4x4')
  )
  assert (row['platform'], row['devices'], row['dtype']) == (
    'tpu',
    16,
    'bfloat16',
  )
  assert row['bytes_per_device']['argument'] > 0
