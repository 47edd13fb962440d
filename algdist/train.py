"""Training the AD transformer: `train_and_evaluate(config, workdir, method)`.

The state, the step, the loop. `train_step(state, batch) -> (state,
metrics)` is one update; the loop jits chunks of them (`make_train_chunk`:
a `fori_loop` of updates whose batches are gathered on the device, metrics
stacked there and fetched once per log row), with the state donated.
Chunks end at log and checkpoint steps. The state is created already
sharded over the mesh the config declares; checkpoints (algdist/checkpoints)
hold the state, whose step is the input pipeline's position
(algdist/input_pipeline), so a stopped run resumes exactly. AD trains on
whole learning histories; Expert Distillation (ED) is the same code on the
last `ed.expert_episodes` episodes of each history.

Shape letters: see the glossary in algdist/__init__.py.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import struct

from algdist import (
  checkpoints,
  config_lib,
  distributed,
  encoder,
  histories,
  input_pipeline,
  metrics,
  model,
  sharding,
)

METHODS = input_pipeline.METHODS  # what `train_and_evaluate` trains


@struct.dataclass
class TrainState:
  """Everything a resumed run needs besides the data position."""

  step: jax.Array  # int32 updates done
  params: dict
  opt_state: optax.OptState
  # Raw key bits (orbax stores arrays, not typed keys); dropout and data keys
  # are fold_in(key, step), so they need no state of their own.
  key: jax.Array


def make_optimizer(t, freeze_encoder: bool = False):
  """`(optimizer, schedule)`: AdamW with linear warmup, cosine decay and
  global-norm clipping; with `freeze_encoder`, the obs encoder's params
  (embedder/obs) get no update, weight decay included."""
  if not 0 <= t.warmup_steps < t.num_steps:
    raise ValueError(
      f'train.warmup_steps={t.warmup_steps} must be in [0, train.num_steps='
      f'{t.num_steps}).'
    )
  schedule = optax.warmup_cosine_decay_schedule(
    init_value=t.init_learning_rate,
    peak_value=t.learning_rate,
    warmup_steps=t.warmup_steps,
    decay_steps=t.num_steps,
    end_value=t.end_learning_rate,
  )
  optimizer = optax.chain(
    optax.clip_by_global_norm(t.grad_clip),
    optax.adamw(schedule, b1=t.b1, b2=t.b2, weight_decay=t.weight_decay),
  )
  if freeze_encoder:
    # Zeroes the final updates of embedder/obs (a stateless step, so the
    # optimizer state keeps the plain tree every sharding rule expects).
    frozen = lambda path: (
      [getattr(k, 'key', None) for k in path[:2]]
      == [
        'embedder',
        'obs',
      ]
    )
    optimizer = optax.chain(
      optimizer,
      optax.stateless(
        lambda updates, _: jax.tree_util.tree_map_with_path(
          lambda path, u: jnp.zeros_like(u) if frozen(path) else u, updates
        )
      ),
    )
  return optimizer, schedule


def state_layout(net, optimizer, inputs, mesh, rules):
  """`(init(key) -> TrainState, abstract TrainState)`; abstract leaves carry
  their shardings.

  Shapes and logical axis names come from `jax.eval_shape` of the init, so
  no parameter is ever materialised unsharded.
  """

  def boxed_init(key):
    params = net.init(key, inputs, deterministic=True)['params']
    return TrainState(
      step=jnp.zeros((), jnp.int32),
      params=params,
      opt_state=optimizer.init(params),
      key=jax.random.key_data(key),
    )

  boxed = jax.eval_shape(boxed_init, jax.random.key(0))
  shardings = sharding.tree_shardings(boxed, mesh, rules)
  abstract = jax.tree.map(
    lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
    nn.meta.unbox(boxed),
    shardings,
  )
  return lambda key: nn.meta.unbox(boxed_init(key)), abstract


def with_encoder(params, encoder_params):
  """`params` with the obs encoder's (embedder/obs) replaced by
  `encoder_params`, each laid out as the array it replaces (every process
  holds the whole of each)."""

  def place(old, new):
    return sharding.from_host(np.asarray(new, old.dtype), old.sharding)

  obs = jax.tree.map(place, params['embedder']['obs'], encoder_params)
  return {**params, 'embedder': {**params['embedder'], 'obs': obs}}


def init_state(init, abstract, seed: int):
  """A fresh TrainState, created directly in its sharded layout."""
  shardings = jax.tree.map(lambda a: a.sharding, abstract)
  return jax.jit(init, out_shardings=shardings)(jax.random.key(seed))


def _loss(logits_BxLxA, target_BxL):
  """Mean cross-entropy and accuracy of predicting the source's action."""
  ce = optax.softmax_cross_entropy_with_integer_labels(logits_BxLxA, target_BxL)
  acc = (jnp.argmax(logits_BxLxA, -1) == target_BxL).mean()
  return ce.mean(), acc


def make_train_step(net, optimizer, schedule):
  """`train_step(state, batch) -> (state, metrics)`; jit it with donation."""

  def train_step(state: TrainState, batch):
    steps, target = batch
    key = jax.random.fold_in(jax.random.wrap_key_data(state.key), state.step)

    def loss_fn(params):
      logits = net.apply(
        {'params': params}, steps, deterministic=False, rngs={'dropout': key}
      )
      loss, acc = _loss(logits, target)
      return loss, acc

    (loss, acc), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = dict(
      loss=loss,
      accuracy=acc,
      grad_norm=optax.tree.norm(grads),
      learning_rate=schedule(state.step),
    )
    state = state.replace(
      step=state.step + 1, params=params, opt_state=opt_state
    )
    return state, metrics

  return train_step


def make_train_chunk(train_step, sample, max_updates: int):
  """`train_chunk(state, num_updates) -> (state, metrics)`: up to
  `max_updates` updates in one call, each on the batch `sample(step)`.

  `num_updates` is traced (a `fori_loop` bound), so chunks of any length
  up to `max_updates` run one compiled program: a resumed run's shorter
  chunks compute each update with the same bits as an uninterrupted run's.
  `metrics` leaves are [max_updates]; entry i is update i of the chunk,
  entries from `num_updates` on are zeros. Jit it with the state donated.
  """

  def train_chunk(state: TrainState, num_updates):
    shapes = jax.eval_shape(train_step, state, sample(state.step))[1]
    zeros = lambda a: jnp.zeros((max_updates,) + a.shape, a.dtype)

    def _update_step(i, carry):
      state, metrics_K = carry
      state, metrics = train_step(state, sample(state.step))
      metrics_K = jax.tree.map(lambda m, x: m.at[i].set(x), metrics_K, metrics)
      return state, metrics_K

    return jax.lax.fori_loop(
      0, num_updates, _update_step, (state, jax.tree.map(zeros, shapes))
    )

  return train_chunk


def chunk_length(done: int, stop: int, t, max_updates: int) -> int:
  """Updates of the next chunk after `done`: up to `max_updates`, ending
  at the next log or checkpoint step, or at `stop`, whichever comes first."""
  ends = (
    done + max_updates,
    (done // t.log_every + 1) * t.log_every,
    (done // t.checkpoint_every + 1) * t.checkpoint_every,
    stop,
  )
  return min(ends) - done


def make_eval_step(net):
  """`eval_step(params, batch) -> (loss, accuracy)`, deterministic."""

  def eval_step(params, batch):
    steps, target = batch
    logits = net.apply({'params': params}, steps, deterministic=True)
    return _loss(logits, target)

  return eval_step


def train_section(config, method: str):
  """`config.train`, or for ED with `ed.num_steps` set, a copy with that many
  updates and the warmup scaled alike (ED imitates one near-fixed policy and
  converges in a fraction of AD's updates)."""
  if method not in METHODS:
    raise ValueError(f"Unknown method '{method}'; use one of {METHODS}.")
  t = config.train
  steps = config.ed.num_steps if method == 'ed' else 0
  if not steps or steps == t.num_steps:
    return t
  t = ml_collections.ConfigDict(t.to_dict())
  t.warmup_steps = t.warmup_steps * steps // t.num_steps
  t.num_steps = steps
  return t


def train_and_evaluate(
  config,
  workdir: str,
  method: str = 'ad',
  progress: bool = True,
  until: int | None = None,
) -> dict:
  """Trains (or resumes training) `method` in `workdir`; returns final metrics.

  Checkpoints go to WORKDIR/checkpoints/<method>, metrics to
  WORKDIR/metrics/train_<method>.jsonl (and TensorBoard). `until` stops
  after that many updates, checkpointed, as a preemption would (tests).
  """
  t = train_section(config, method)
  dataset = histories.load(
    os.path.join(workdir, 'histories'), verify=config.data.verify
  )
  cfg, obs = config_lib.model_config(config)
  net = model.Transformer(cfg)
  optimizer, schedule = make_optimizer(t, cfg.freeze_encoder)
  pretrained = encoder.encoder_params(config, workdir)
  mesh, rules = sharding.config_mesh(config.sharding)
  ckpt_dir = checkpoints.directory(workdir, method)
  stop = t.num_steps if until is None else min(until, t.num_steps)
  with contextlib.ExitStack() as stack:
    stack.enter_context(jax.set_mesh(mesh))
    # closing() waits for the last async save, also when a step raises.
    manager = stack.enter_context(
      contextlib.closing(checkpoints.make_manager(ckpt_dir, t.keep_checkpoints))
    )
    inputs = model.example_steps(cfg, obs.shape, obs.dtype)
    init, abstract = state_layout(net, optimizer, inputs, mesh, rules)
    recorded = config_lib.training_fields(config, method)
    # Another model's arrays are named first, then any other change.
    state = checkpoints.restore_latest(manager, abstract, ckpt_dir)
    if state is None:
      state = init_state(init, abstract, t.seed)
      if pretrained is not None:  # the encoder starts as pretrained
        state = state.replace(params=with_encoder(state.params, pretrained))
    else:
      checkpoints.check_provenance(
        checkpoints.read_provenance(manager, ckpt_dir), recorded, ckpt_dir
      )
      logging.info('Resuming %s from update %d.', method, int(state.step))
    start = int(state.step)
    cached = bool(config.model.encoder.cache_embeddings)
    if cached:  # the frozen encoder once per frame, not in every update
      dataset = encoder.embed_frames(config, pretrained, dataset, progress)
      obs = jax.ShapeDtypeStruct((cfg.d_model,), jnp.float32)
    pipeline = input_pipeline.make_pipeline(
      config, dataset, method, cfg, obs, mesh, rules, start
    )
    tokens_per_update = t.batch_size * pipeline.window_steps
    train_step = make_train_step(net, optimizer, schedule)
    # XLA:CPU runs a conv net's update 7x slower inside a loop body than as
    # its own program (Watermaze 24x32: 1.87 s against 0.26 s per update):
    # conv models on CPU take one update per call.
    loop_ok = (
      cfg.obs_encoder != 'conv' or cached or jax.default_backend() != 'cpu'
    )
    if pipeline.sample is not None and loop_ok:
      # A chunk of updates per call, its batches gathered on the device:
      # no host round trip per update. A chunk never crosses a log step, so
      # the metrics of a log row are fetched once.
      max_updates = t.log_every
      chunk = jax.jit(
        make_train_chunk(train_step, pipeline.sample, max_updates),
        donate_argnums=0,
      )
      run = lambda state, first, num: chunk(state, num)
    else:
      # Streamed batches come from the host (or device batches one call
      # each): one update per call, its metrics stacked as a chunk's.
      max_updates = 1

      def one_update(state, batch):
        state, m = train_step(state, batch)
        return state, jax.tree.map(lambda x: x[None], m)

      one_update = jax.jit(one_update, donate_argnums=0)
      run = lambda state, first, num: one_update(
        state, pipeline.next_batch(first)
      )

    eval_step = jax.jit(make_eval_step(net))
    writer = stack.enter_context(
      contextlib.closing(
        metrics.MetricWriter(
          os.path.join(workdir, 'metrics'), f'train_{method}', start
        )
      )
    )
    bar = stack.enter_context(
      metrics.progress(t.num_steps, start, progress, f'train {method}', 'step')
    )
    # (metrics [max_updates], updates) of each chunk since the last row,
    # fetched at log steps: no stall per chunk.
    pending, last = [], writer.last_row()
    tick, tick_step = time.perf_counter(), start
    step = start
    stack.enter_context(checkpoints.catch_preemption())
    while step < stop:
      num = chunk_length(step, stop, t, max_updates)
      state, chunk_metrics = run(state, step, num)
      pending.append((chunk_metrics, num))
      step += num
      # A preemption notice ends the run here as `until` would: logged,
      # checkpointed; then Preempted stops the pipeline.
      notice = checkpoints.preempted()
      at_end = step == stop or notice
      if step % t.log_every == 0 or at_end:
        fetched = [
          {k: v[i] for k, v in m.items()}
          for m, n in jax.device_get(pending)
          for i in range(n)
        ]
        pending = []
        metrics.check_finite(fetched, step, method, manager.latest_step())
        last = {k: float(np.mean([m[k] for m in fetched])) for k in fetched[0]}
        now = time.perf_counter()
        last['tokens_per_s'] = (
          (step - tick_step) * tokens_per_update / (now - tick)
        )
        tick, tick_step = now, step
        validation = pipeline.validation
        if validation is not None and (step % t.eval_every == 0 or at_end):
          last.update(_validate(eval_step, state.params, validation))
        writer.write(step, last)
        bar(
          step,
          f'loss {last["loss"]:.3f} acc {last["accuracy"]:.3f} '
          f'{last["tokens_per_s"]:,.0f} tok/s',
        )
      if step % t.checkpoint_every == 0 or at_end:
        checkpoints.save(manager, step, state, method, recorded, t.num_steps)
      if notice:
        manager.wait_until_finished()
        distributed.barrier('preempted')  # every process's part written
        checkpoints.stop_for_preemption(
          f'{method} stopped at update {step} of {t.num_steps} on a '
          'preemption notice, its checkpoint saved: run the same command '
          'to resume.'
        )
  return {
    'method': method,
    'step': int(state.step),
    'updates_run': int(state.step) - start,
    'num_params': model.num_params(state.params),
    'model': dataclasses.asdict(cfg),
    **last,
  }


def _validate(eval_step, params, validation) -> dict:
  """Held-out loss and accuracy, and the best constant action's accuracy."""
  steps, target = validation
  losses, accs = [], []
  for i in range(target.shape[0]):
    batch = jax.tree.map(lambda x, i=i: x[i], (steps, target))
    loss, acc = eval_step(params, batch)
    losses.append(loss)
    accs.append(acc)
  losses, accs = jax.device_get((losses, accs))
  counts = np.bincount(np.asarray(target).ravel())
  return {
    'val_loss': float(np.mean(losses)),
    'val_accuracy': float(np.mean(accs)),
    'val_constant_action_accuracy': float(counts.max() / counts.sum()),
  }
