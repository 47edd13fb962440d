"""Training: resume exactness, sharding, wrong checkpoints, NaNs, metrics."""

import json
import os

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from algdist import (
  checkpoints,
  config_lib,
  histories,
  input_pipeline,
  sequence,
  sharding,
  train,
)
from configs import dark_room


def _config(**train_overrides):
  config = dark_room.get_config('smoke')
  config.train.update(train_overrides)
  return config


@pytest.fixture(scope='module')
def dataset(tmp_path_factory):
  """Smoke-preset Dark Room histories, shared read-only by every test."""
  directory = str(tmp_path_factory.mktemp('data') / 'histories')
  spec = histories.spec_from_config(_config())
  histories.generate(spec, directory, progress=False)
  return directory


def _workdir(tmp_path, dataset, name='run'):
  workdir = tmp_path / name
  workdir.mkdir()
  os.symlink(dataset, workdir / 'histories')
  return str(workdir)


def _final_state(config, workdir, method='ad'):
  _, params = checkpoints.restore_params(config, workdir, method)
  # On one device of this process, whatever the training mesh was.
  for leaf in jax.tree.leaves(params):
    assert leaf.devices() == {jax.local_devices()[0]}
  return params


@pytest.mark.parametrize(
  'placement',
  # The streamed loader's own resume is in input_pipeline_test.
  ['device', pytest.param('stream', marks=pytest.mark.slow)],
)
def test_resume_equals_an_uninterrupted_run_bitwise(
  tmp_path, dataset, placement
):
  config = _config(num_steps=12, checkpoint_every=4, log_every=4)
  config.data.placement = placement
  straight = _workdir(tmp_path, dataset, 'straight')
  train.train_and_evaluate(config, straight, progress=False)
  resumed = _workdir(tmp_path, dataset, 'resumed')
  # Stopped after 6 updates: the newest checkpoint is update 6 (the stop
  # saves), so resuming replays nothing and skips nothing.
  train.train_and_evaluate(config, resumed, progress=False, until=6)
  summary = train.train_and_evaluate(config, resumed, progress=False)
  assert summary['step'] == 12
  chex.assert_trees_all_equal(
    _final_state(config, straight), _final_state(config, resumed)
  )
  rows = [
    json.loads(line)
    for line in open(os.path.join(resumed, 'metrics', 'train_ad.jsonl'))
  ]
  assert [r['step'] for r in rows] == [4, 6, 8, 12]


def test_state_is_sharded_as_the_rules_say_and_steps_match_one_device():
  config = _config()
  cfg, obs = config_lib.model_config(config)
  net = train.model.Transformer(cfg)
  optimizer, schedule = train.make_optimizer(config.train)
  inputs = train.model.example_steps(cfg, obs.shape, obs.dtype)
  rules = (('batch', 'data'), ('mlp', 'data'))
  states, outs = [], []
  for devices in (jax.devices(), jax.devices()[:1]):
    mesh = sharding.make_mesh((-1,), ('data',), devices)
    with jax.set_mesh(mesh):
      init, abstract = train.state_layout(net, optimizer, inputs, mesh, rules)
      state = train.init_state(init, abstract, seed=0)
      batch = _batch(obs, cfg, 16)
      batch = jax.device_put(
        batch,
        jax.tree.map(
          lambda x, m=mesh: sharding.batch_sharding(m, rules, x.ndim), batch
        ),
      )
      step = jax.jit(train.make_train_step(net, optimizer, schedule))
      states.append(state)
      outs.append(step(state, batch))
  assert len(jax.devices()) == 8
  # Feed-forward weights ('embed', 'mlp') split their 'mlp' dim 8 ways.
  kernel = states[0].params['blocks_0']['mlp']['up']['kernel']
  assert kernel.sharding.spec == jax.sharding.PartitionSpec(None, 'data')
  assert len(kernel.addressable_shards) == 8
  assert kernel.addressable_shards[0].data.shape == (
    cfg.d_model,
    cfg.d_ff // 8,
  )
  # Adam's moments follow their parameters.
  mu = states[0].opt_state[1][0].mu['blocks_0']['mlp']['up']['kernel']
  assert mu.sharding.spec == kernel.sharding.spec
  chex.assert_trees_all_close(
    jax.device_get(outs[0]), jax.device_get(outs[1]), atol=1e-5, rtol=1e-5
  )


def test_a_hybrid_mesh_places_granules_on_its_outer_axes():
  section = config_lib.sharding()
  section.mesh_axes = ('replica', 'data')
  section.mesh_shape = (1, -1)  # devices of one granule (this process)
  section.dcn_mesh_shape = (1, 1)
  mesh, _ = sharding.config_mesh(section)
  assert dict(mesh.shape) == {'replica': 1, 'data': 8}
  # One process is one granule: two cannot be had here (the multi-process
  # test builds (2, 1) over 2 processes).
  section.dcn_mesh_shape = (2, 1)
  with pytest.raises(ValueError, match='asks for 2 granules; there are 1'):
    sharding.config_mesh(section)
  section.dcn_mesh_shape = (2,)
  with pytest.raises(ValueError, match='same length'):
    sharding.config_mesh(section)


def _batch(obs, cfg, batch, seed=0):
  rng = np.random.default_rng(seed)
  L = cfg.context_steps
  steps = sequence.make_step(
    rng.integers(0, cfg.obs_vocab, (batch, L, *obs.shape)).astype(obs.dtype),
    rng.integers(0, cfg.num_actions + 1, (batch, L)),
    rng.random((batch, L)),
    rng.random((batch, L)) < 0.1,
  )
  target = rng.integers(0, cfg.num_actions, (batch, L)).astype(np.int32)
  return steps, target


def test_a_chunk_runs_the_updates_of_its_steps_in_order():
  config = _config()
  cfg, obs = config_lib.model_config(config)
  net = train.model.Transformer(cfg)
  optimizer, schedule = train.make_optimizer(config.train)
  inputs = train.model.example_steps(cfg, obs.shape, obs.dtype)
  mesh = sharding.make_mesh((-1,), ('data',), jax.devices()[:1])
  batches = [_batch(obs, cfg, 8, seed) for seed in range(5)]
  stacked = jax.tree.map(lambda *x: jnp.stack(x), *batches)
  sample = lambda step: jax.tree.map(lambda x: x[step], stacked)
  train_step = train.make_train_step(net, optimizer, schedule)
  with jax.set_mesh(mesh):
    init, abstract = train.state_layout(net, optimizer, inputs, mesh, ())
    state = train.init_state(init, abstract, seed=0)
    step = jax.jit(train_step)
    one_by_one, expected = state, []
    for batch in batches:
      one_by_one, m = step(one_by_one, batch)
      expected.append(m)
    # Chunks of 3 and 2 updates of a 4-update program: update k of the run
    # trains on sample(k) whatever chunk it falls in.
    chunk = chex.assert_max_traces(
      train.make_train_chunk(train_step, sample, 4), n=1
    )
    chunk = jax.jit(chunk)
    chunked, first = chunk(state, 3)
    chunked, second = chunk(chunked, 2)
  assert int(chunked.step) == 5
  got = [jax.tree.map(lambda x, i=i: x[i], first) for i in range(3)]
  got += [jax.tree.map(lambda x, i=i: x[i], second) for i in range(2)]
  chex.assert_trees_all_close(got, expected, atol=1e-5, rtol=1e-5)
  chex.assert_trees_all_close(
    chunked.params, one_by_one.params, atol=1e-5, rtol=1e-5
  )
  # Entries past the chunk's updates are zeros, never another's metrics.
  assert all(float(v[2]) == 0 for v in second.values())


def test_chunks_end_at_log_and_checkpoint_steps():
  t = _config(log_every=4, checkpoint_every=6).train
  lengths, done = [], 0
  while done < 13:
    lengths.append(train.chunk_length(done, 13, t, max_updates=4))
    done += lengths[-1]
  # Ends: 4, 6 (checkpoint), 8, 12, 13 (stop).
  assert lengths == [4, 2, 2, 4, 1]


def test_a_checkpoint_of_another_model_is_refused(tmp_path, dataset):
  workdir = _workdir(tmp_path, dataset)
  config = _config(num_steps=8, checkpoint_every=4)
  train.train_and_evaluate(config, workdir, progress=False, until=4)
  wider = _config(num_steps=8)
  wider.model.d_model = 32
  with pytest.raises(
    checkpoints.CheckpointError,
    match=r'holds .* of shape \(4, 4\); this config builds \(4, 8\)',
  ):
    train.train_and_evaluate(wider, workdir, progress=False)
  deeper = _config(num_steps=8)
  deeper.model.num_layers = 2
  with pytest.raises(checkpoints.CheckpointError, match='blocks_1'):
    train.train_and_evaluate(deeper, workdir, progress=False)
  # Evaluation reads only the parameters, and refuses them alike.
  with pytest.raises(
    checkpoints.CheckpointError,
    match=r'holds .* of shape \(4, 4\); this config builds \(4, 8\)',
  ):
    checkpoints.restore_params(wider, workdir)
  with pytest.raises(checkpoints.CheckpointError, match='blocks_1'):
    checkpoints.restore_params(deeper, workdir)
  with pytest.raises(checkpoints.CheckpointError, match='No ed checkpoint'):
    checkpoints.restore_params(config, workdir, 'ed')


def test_a_diverging_run_stops_naming_the_update(tmp_path, dataset):
  workdir = _workdir(tmp_path, dataset)
  config = _config(
    num_steps=20, learning_rate=1e12, init_learning_rate=1e12, log_every=5
  )
  config.train.grad_clip = 1e30
  with pytest.raises(FloatingPointError, match=r'at update \d+ .*learning'):
    train.train_and_evaluate(config, workdir, progress=False)


def test_metrics_and_validation_are_logged(tmp_path, dataset):
  workdir = _workdir(tmp_path, dataset)
  summary = train.train_and_evaluate(_config(), workdir, progress=False)
  rows = [
    json.loads(line)
    for line in open(os.path.join(workdir, 'metrics', 'train_ad.jsonl'))
  ]
  assert [r['step'] for r in rows] == [10, 20]
  for key in ('loss', 'accuracy', 'grad_norm', 'learning_rate', 'val_loss'):
    assert np.isfinite(rows[-1][key])
  assert 0 < rows[-1]['val_constant_action_accuracy'] <= 1
  assert summary['num_params'] > 0
  assert os.listdir(os.path.join(workdir, 'metrics', 'tensorboard', 'train_ad'))


def test_expert_distillation_trains_with_the_same_code(
  tmp_path, dataset, monkeypatch
):
  workdir = _workdir(tmp_path, dataset)
  config = _config()
  summary = train.train_and_evaluate(config, workdir, 'ed', progress=False)
  assert summary['step'] == config.ed.num_steps  # ED's own, not train's
  assert os.path.isdir(os.path.join(workdir, 'checkpoints', 'ed'))
  with pytest.raises(ValueError, match='Unknown method'):
    train.train_and_evaluate(_config(), workdir, 'rl2', progress=False)

  # Evaluation's restore builds no optimizer: building one now fails.
  def no_optimizer(*args, **kwargs):
    raise AssertionError('restore_params built an optimizer')

  monkeypatch.setattr(train, 'make_optimizer', no_optimizer)
  monkeypatch.setattr(optax, 'adamw', no_optimizer)
  params = _final_state(config, workdir, 'ed')
  chex.assert_tree_all_finite(params)
  assert sum(x.size for x in jax.tree.leaves(params)) == summary['num_params']


def test_ed_num_steps_sets_eds_updates_and_scales_its_warmup(tmp_path, dataset):
  config = _config(num_steps=20, warmup_steps=10, log_every=4)
  config.ed.num_steps = 8
  assert train.train_section(config, 'ad') is config.train
  section = train.train_section(config, 'ed')
  assert (section.num_steps, section.warmup_steps) == (8, 4)
  workdir = _workdir(tmp_path, dataset)
  summary = train.train_and_evaluate(config, workdir, 'ed', progress=False)
  assert summary['step'] == 8
  rows = [
    json.loads(line)
    for line in open(os.path.join(workdir, 'metrics', 'train_ed.jsonl'))
  ]
  assert [r['step'] for r in rows] == [4, 8]
  # A row holds the mean rate of its 4 updates: the warmup of 4 (not the
  # 10 of train) ramps 0, 1/4, 2/4, 3/4 of the peak, then the cosine over
  # the 4 remaining updates runs 1, 0.85, 0.5, 0.15.
  peak = config.train.learning_rate
  assert rows[0]['learning_rate'] == pytest.approx(0.375 * peak, rel=0.02)
  assert rows[1]['learning_rate'] == pytest.approx(0.625 * peak, rel=0.02)
  checkpoints.restore_params(config, workdir, 'ed')  # restores its own


def _selection(config, cfg, data):
  """(window steps, selected rows) as AD's pipeline chooses them."""
  window = input_pipeline.run_window_steps(config, cfg)
  selection = input_pipeline.select_histories(
    data,
    window_steps=window,
    validation_tasks=config.data.validation_tasks,
    expert_episodes=0,
    seed=config.data.seed,
  )
  return window, selection


def test_the_batch_of_a_step_is_of_training_histories_whatever_the_step_type(
  dataset,
):
  """next_batch(k) is the documented draw from the training rows, for k a
  Python int (as the loop passes it) or an int32 array (as a scan would):
  jit traces each type anew, so the batch must not depend on which trace
  runs, nor read the held-out rows the pipeline also builds."""
  config = _config()
  data = histories.load(dataset)
  cfg, obs = config_lib.model_config(config)
  mesh, rules = sharding.config_mesh(config.sharding)
  window, selection = _selection(config, cfg, data)
  train_rows = input_pipeline.device_data(
    data.history, selection.train, selection, cfg.num_actions, window
  )
  data_key = jax.random.fold_in(jax.random.key(config.train.seed), 1)
  with jax.set_mesh(mesh):
    pipeline = input_pipeline.make_pipeline(
      config, data, 'ad', cfg, obs, mesh, rules, 0
    )
    assert pipeline.validation is not None  # held-out rows were built too
    for step in (0, 5):
      expected = input_pipeline.sample_windows(
        jax.random.fold_in(data_key, step),
        train_rows,
        config.train.batch_size,
        window,
        config.data.first_window_prob,
      )
      chex.assert_trees_all_equal(pipeline.next_batch(step), expected)
      chex.assert_trees_all_equal(
        pipeline.next_batch(jnp.int32(step)), expected
      )


def test_a_streamed_batch_is_the_documented_windows_on_any_mesh(dataset):
  """Streamed: update k reads windows k * B .. k * B + B - 1 of the source,
  each device its rows, also while the pipeline builds held-out rows."""
  config = _config()
  config.data.placement = 'stream'
  data = histories.load(dataset)
  cfg, obs = config_lib.model_config(config)
  window, selection = _selection(config, cfg, data)
  source = input_pipeline.WindowSource(
    data.history,
    selection.train,
    selection,
    cfg.num_actions,
    window,
    seed=config.train.seed,
    first_window_prob=config.data.first_window_prob,
  )
  batch = config.train.batch_size
  for devices in (jax.devices(), jax.devices()[:1]):
    mesh, rules = sharding.config_mesh(config.sharding, devices)
    pipeline = input_pipeline.make_pipeline(
      config, data, 'ad', cfg, obs, mesh, rules, 1
    )
    assert pipeline.sample is None and pipeline.validation is not None
    got = pipeline.next_batch(1)
    assert len(jax.tree.leaves(got)[0].sharding.device_set) == len(devices)
    expected = [source[batch + i] for i in range(batch)]
    chex.assert_trees_all_equal(
      jax.device_get(got), jax.tree.map(lambda *x: np.stack(x), *expected)
    )
