"""Training the AD transformer: `train_and_evaluate(config, workdir, method)`.

One jitted `train_step(state, batch) -> (state, metrics)` with the state
donated; the state is created already sharded over the mesh the config
declares; orbax checkpoints hold the state (parameters, optimizer, step,
RNG) and the input pipeline's position, so a stopped run resumes exactly.
AD trains on whole learning histories; Expert Distillation (ED) is the same
code on the last `ed.expert_episodes` episodes of each history.

Letters: B batch, L context steps, A actions.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp
from flax import struct

from algdist import envs, histories, input_pipeline, model, sharding

METHODS = ('ad', 'ed')


@struct.dataclass
class TrainState:
  """Everything a resumed run needs besides the data position."""

  step: jax.Array  # int32 updates done
  params: dict
  opt_state: optax.OptState
  # Raw key bits (orbax stores arrays, not typed keys); dropout and data keys
  # are fold_in(key, step), so they need no state of their own.
  key: jax.Array


def resolve_dtype(name: str) -> str:
  """'auto' -> bfloat16 on accelerators, float32 on CPU (no bf16 units)."""
  if name != 'auto':
    return name
  return 'float32' if jax.default_backend() == 'cpu' else 'bfloat16'


def model_config(config) -> tuple[model.ModelConfig, jax.ShapeDtypeStruct]:
  """The model of an experiment (config.model plus what the env dictates),
  and the env's observation shape and dtype."""
  env, params = envs.make(config.env.name, **config.env.overrides.to_dict())
  obs = jax.eval_shape(lambda: env.reset(jax.random.key(0), params)[0])
  if obs.ndim == 3 and obs.dtype == jnp.uint8:
    encoder, vocab = 'conv', 0
  elif jnp.issubdtype(obs.dtype, jnp.integer):
    space = env.observation_space(params)
    encoder, vocab = 'embed', int(np.max(np.asarray(space.high))) + 1
  else:
    encoder, vocab = 'dense', 0
  m = config.model
  cfg = model.ModelConfig(
    num_actions=int(env.action_space(params).n),
    obs_encoder=encoder,
    obs_vocab=vocab,
    layout=m.layout,
    context_steps=m.context_steps,
    num_layers=m.num_layers,
    num_heads=m.num_heads,
    d_model=m.d_model,
    d_ff=m.d_ff,
    dropout=m.dropout,
    attention_dropout=m.attention_dropout,
    norm=m.norm,
    dtype=resolve_dtype(m.dtype),
    attention_impl=m.attention_impl,
  )
  cfg.validate()
  return cfg, obs


def make_optimizer(t) -> optax.GradientTransformation:
  """AdamW with linear warmup, cosine decay and global-norm clipping."""
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
  return optax.chain(
    optax.clip_by_global_norm(t.grad_clip),
    optax.adamw(schedule, b1=t.b1, b2=t.b2, weight_decay=t.weight_decay),
  ), schedule


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


def make_eval_step(net):
  """`eval_step(params, batch) -> (loss, accuracy)`, deterministic."""

  def eval_step(params, batch):
    steps, target = batch
    logits = net.apply({'params': params}, steps, deterministic=True)
    return _loss(logits, target)

  return eval_step


class MetricWriter:
  """JSON lines always, TensorBoard where tensorboardX is installed.

  Only process 0 writes: every process computes the same global metrics.
  """

  def __init__(self, directory: str, name: str):
    self._enabled = jax.process_index() == 0
    self._path = os.path.join(directory, f'{name}.jsonl')
    self._jsonl = None
    self._tb = None
    if not self._enabled:
      return
    os.makedirs(directory, exist_ok=True)
    self._jsonl = open(self._path, 'a')  # noqa: SIM115  (closed in close())
    try:
      from tensorboardX import SummaryWriter  # noqa: PLC0415

      self._tb = SummaryWriter(os.path.join(directory, 'tensorboard', name))
    except ImportError:
      logging.info('tensorboardX not installed: JSON-lines metrics only.')

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


class CheckpointError(RuntimeError):
  """A checkpoint that does not fit this run."""


def _checkpoint_manager(directory: str, t) -> ocp.CheckpointManager:
  options = ocp.CheckpointManagerOptions(
    max_to_keep=t.keep_checkpoints, create=True
  )
  handlers = {
    'state': ocp.StandardCheckpointHandler(),
    'meta': ocp.JsonCheckpointHandler(),
  }
  return ocp.CheckpointManager(
    os.path.abspath(directory), options=options, item_handlers=handlers
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


def _check_shapes(manager, step: int, abstract, directory: str) -> None:
  """Raises CheckpointError naming the first array whose shape differs."""
  saved = manager.item_metadata(step)['state']
  have = {
    _path(p): tuple(m.shape)
    for p, m in jax.tree_util.tree_flatten_with_path(saved)[0]
  }
  fix = (
    f'It was written by another model: use the config it was trained with, '
    f'another --workdir, or delete {directory} to train from scratch.'
  )
  for path, leaf in jax.tree_util.tree_flatten_with_path(abstract)[0]:
    name = _path(path)
    if name not in have:
      raise CheckpointError(
        f'The checkpoint in {directory} (update {step}) has no {name}. {fix}'
      )
    if have[name] != tuple(leaf.shape):
      raise CheckpointError(
        f'The checkpoint in {directory} (update {step}) holds {name} of '
        f'shape {have[name]}; this config builds {tuple(leaf.shape)}. {fix}'
      )
  extra = sorted(
    set(have)
    - {_path(p) for p, _ in jax.tree_util.tree_flatten_with_path(abstract)[0]}
  )
  if extra:
    raise CheckpointError(
      f'The checkpoint in {directory} (update {step}) holds {extra[0]}, '
      f'which this config does not build. {fix}'
    )


def restore_state(manager, step, abstract, directory):
  """The TrainState of checkpoint `step`, laid out as `abstract` says.

  The data position needs no restoring: it is the step (see input_pipeline).
  """
  _check_shapes(manager, step, abstract, directory)
  restored = manager.restore(
    step,
    args=ocp.args.Composite(
      state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()
    ),
  )
  return restored['state']


def restore_params(config, workdir: str, method: str = 'ad'):
  """`(ModelConfig, params)` of the newest `method` checkpoint in `workdir`,
  on one device (evaluation replicates them)."""
  cfg, obs = model_config(config)
  net = model.Transformer(cfg)
  optimizer, _ = make_optimizer(train_section(config, method))
  mesh = sharding.make_mesh((1,), ('data',), jax.devices()[:1])
  inputs = model.example_steps(cfg, obs.shape, obs.dtype)
  _, abstract = state_layout(net, optimizer, inputs, mesh, ())
  ckpt_dir = os.path.join(workdir, 'checkpoints', method)
  manager = _checkpoint_manager(ckpt_dir, config.train)
  try:
    step = manager.latest_step()
    if step is None:
      raise CheckpointError(
        f'No {method} checkpoint in {ckpt_dir}; run --mode train first.'
      )
    return cfg, restore_state(manager, step, abstract, ckpt_dir).params
  finally:
    manager.close()


@dataclasses.dataclass
class Run:
  """What `train_and_evaluate` sets up: the data, the model, the mesh."""

  model_config: model.ModelConfig
  net: model.Transformer
  mesh: jax.sharding.Mesh
  rules: tuple
  selection: input_pipeline.Selection
  history: object
  obs: jax.ShapeDtypeStruct  # one observation's shape and dtype
  window_steps: int  # steps per training window (>= context_steps)


def run_window_steps(config, cfg: model.ModelConfig) -> int:
  """Steps per training window: at least the model's attention span.

  Windows longer than the span train the sliding-window attention that the
  evaluation KV cache runs: there, after the ring buffer wraps, the oldest
  cached keys of deeper layers were computed with context of their own, a
  case that windows no longer than the span never show the model.
  """
  steps = config.data.window_steps
  if steps < cfg.context_steps:
    raise ValueError(
      f'data.window_steps={steps} must be >= model.context_steps='
      f'{cfg.context_steps}.'
    )
  return steps


def train_section(config, method: str):
  """`config.train`, or for ED with `ed.num_steps` set, a copy with that many
  updates and the warmup scaled alike (ED imitates one near-fixed policy and
  converges in a fraction of AD's updates)."""
  t = config.train
  steps = config.ed.num_steps if method == 'ed' else 0
  if not steps or steps == t.num_steps:
    return t
  t = ml_collections.ConfigDict(t.to_dict())
  t.warmup_steps = t.warmup_steps * steps // t.num_steps
  t.num_steps = steps
  return t


def expert_episodes(config, method: str) -> int:
  if method not in METHODS:
    raise ValueError(f"Unknown method '{method}'; use one of {METHODS}.")
  return config.ed.expert_episodes if method == 'ed' else 0


def setup(config, workdir: str, method: str) -> Run:
  """Loads the dataset and builds the model and mesh for `method`."""
  manifest, history, length, task_index = histories.load(
    os.path.join(workdir, 'histories'), verify=config.data.verify
  )
  cfg, obs = model_config(config)
  if history.obs.shape[2:] != obs.shape or history.obs.dtype != obs.dtype:
    raise histories.DatasetError(
      f'The histories in {workdir} hold observations of shape '
      f'{history.obs.shape[2:]} {history.obs.dtype}; {config.env.name} with '
      f'this config observes {obs.shape} {obs.dtype}. Regenerate them.'
    )
  selection = input_pipeline.select_histories(
    manifest,
    history,
    length,
    task_index,
    window_steps=run_window_steps(config, cfg),
    validation_tasks=config.data.validation_tasks,
    expert_episodes=expert_episodes(config, method),
    seed=config.data.seed,
  )
  s = config.sharding
  mesh = sharding.make_mesh(s.mesh_shape, s.mesh_axes)
  rules = tuple(tuple(r) for r in s.rules)
  return Run(
    model_config=cfg,
    net=model.Transformer(cfg),
    mesh=mesh,
    rules=rules,
    selection=selection,
    history=history,
    obs=obs,
    window_steps=run_window_steps(config, cfg),
  )


def _on_device(config, run: Run) -> bool:
  placement = config.data.placement
  if placement not in ('auto', 'device', 'stream'):
    raise ValueError(
      f"data.placement='{placement}': use 'auto', 'device' or 'stream'."
    )
  if placement != 'auto':
    return placement == 'device'
  size = input_pipeline.dataset_bytes(run.history, run.selection.train)
  return size <= config.data.max_device_mb * 2**20


def batch_iterator(config, run: Run, start_step: int):
  """`next_batch(step)`: the global batch of update `step`, sharded.

  On the device, windows are gathered inside jit from fold_in(key, step); a
  streamed dataset is read by grain from `start_step` on. Either way the
  batch of an update depends only on the step, so a resumed run sees the
  batches an uninterrupted one would have.
  """
  cfg, t = run.model_config, config.train
  context, batch_size = run.window_steps, t.batch_size
  batch_shard = lambda x: sharding.batch_sharding(run.mesh, run.rules, x.ndim)
  if _on_device(config, run):
    data = input_pipeline.device_data(
      run.history, run.selection.train, run.selection, cfg.num_actions, context
    )
    data_key = jax.random.fold_in(jax.random.key(t.seed), 1)

    def sample(step):
      key = jax.random.fold_in(data_key, step)
      return input_pipeline.sample_windows(
        key, data, batch_size, context, config.data.first_window_prob
      )

    shapes = jax.eval_shape(sample, 0)
    return jax.jit(sample, out_shardings=jax.tree.map(batch_shard, shapes))

  source = input_pipeline.WindowSource(
    run.history,
    run.selection.train,
    run.selection,
    cfg.num_actions,
    context,
    seed=t.seed,
    first_window_prob=config.data.first_window_prob,
  )
  stream = input_pipeline.stream_windows(
    source,
    global_batch=batch_size,
    start_step=start_step,
    process_index=jax.process_index(),
    process_count=jax.process_count(),
    num_threads=config.data.num_threads,
  )

  def next_batch(step):
    del step  # the stream started at start_step and advances one per call
    to_global = lambda x: jax.make_array_from_process_local_data(
      batch_shard(x), x
    )
    return jax.tree.map(to_global, next(stream))

  return next_batch


def _check_finite(fetched: list[dict], step: int, method: str, manager):
  """Stops the run on a non-finite loss, saying where and what to do."""
  bad = [i for i, m in enumerate(fetched) if not math.isfinite(m['loss'])]
  if not bad:
    return
  update = step - len(fetched) + bad[0] + 1
  lr = fetched[bad[0]]['learning_rate']
  raise FloatingPointError(
    f'{method}: the training loss became {fetched[bad[0]]["loss"]} at update '
    f'{update} (learning rate {lr:.3g}, gradient norm '
    f'{fetched[bad[0]]["grad_norm"]:.3g}). The last good checkpoint '
    f'({manager.latest_step()}) is kept; lower train.learning_rate or raise '
    'train.warmup_steps, then run again to resume from it.'
  )


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
  run = setup(config, workdir, method)
  cfg = run.model_config
  optimizer, schedule = make_optimizer(t)
  inputs = model.example_steps(cfg, run.obs.shape, run.obs.dtype)
  ckpt_dir = os.path.join(workdir, 'checkpoints', method)
  stop = t.num_steps if until is None else min(until, t.num_steps)
  tokens_per_update = t.batch_size * run.window_steps
  with contextlib.ExitStack() as stack:
    stack.enter_context(jax.set_mesh(run.mesh))
    # closing() waits for the last async save, also when a step raises.
    manager = stack.enter_context(
      contextlib.closing(_checkpoint_manager(ckpt_dir, t))
    )
    init, abstract = state_layout(
      run.net, optimizer, inputs, run.mesh, run.rules
    )
    latest = manager.latest_step()
    if latest is None:
      state = init_state(init, abstract, t.seed)
    else:
      state = restore_state(manager, latest, abstract, ckpt_dir)
      logging.info('Resuming %s from update %d.', method, latest)
    start = int(state.step)
    next_batch = batch_iterator(config, run, start)
    validation = _validation_batches(config, run)
    train_step = jax.jit(
      make_train_step(run.net, optimizer, schedule), donate_argnums=0
    )
    eval_step = jax.jit(make_eval_step(run.net))
    writer = stack.enter_context(
      contextlib.closing(
        MetricWriter(os.path.join(workdir, 'metrics'), f'train_{method}')
      )
    )
    bar = stack.enter_context(_progress(t.num_steps, start, progress, method))
    pending, last = [], writer.last_row()
    tick, tick_step = time.perf_counter(), start
    for step in range(start + 1, stop + 1):
      state, metrics = train_step(state, next_batch(step - 1))
      pending.append(metrics)  # fetched at log steps: no stall per update
      at_end = step == stop
      if step % t.log_every == 0 or at_end:
        fetched, pending = jax.device_get(pending), []
        _check_finite(fetched, step, method, manager)
        last = {k: float(np.mean([m[k] for m in fetched])) for k in fetched[0]}
        now = time.perf_counter()
        last['tokens_per_s'] = (
          (step - tick_step) * tokens_per_update / (now - tick)
        )
        tick, tick_step = now, step
        if validation is not None and (step % t.eval_every == 0 or at_end):
          last.update(_validate(eval_step, state.params, validation))
        writer.write(step, last)
        bar(step, last)
      if step % t.checkpoint_every == 0 or at_end:
        manager.save(
          step,
          args=ocp.args.Composite(
            state=ocp.args.StandardSave(state),
            meta=ocp.args.JsonSave({'data_position': step, 'method': method}),
          ),
        )
  return {
    'method': method,
    'step': int(state.step),
    'updates_run': int(state.step) - start,
    'num_params': model.num_params(state.params),
    'model': dataclasses.asdict(cfg),
    **last,
  }


def _validation_batches(config, run: Run):
  """Fixed windows of the held-out tasks' histories, or None if none."""
  cfg, batch_size = run.model_config, config.train.batch_size
  rows = run.selection.validation
  if len(rows) == 0 or config.data.num_validation_windows <= 0:
    return None
  data = input_pipeline.device_data(
    run.history, rows, run.selection, cfg.num_actions, run.window_steps
  )
  num = max(config.data.num_validation_windows, batch_size)
  return input_pipeline.fixed_windows(
    jax.random.key(config.data.seed), data, num, batch_size, run.window_steps
  )


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


@contextlib.contextmanager
def _progress(total: int, initial: int, enabled: bool, method: str):
  """A tqdm bar over updates showing loss and tokens/s, or a no-op."""
  if not enabled or jax.process_index() != 0:
    yield lambda *a: None
    return
  from tqdm import tqdm  # noqa: PLC0415

  bar = tqdm(total=total, initial=initial, unit='step', desc=f'train {method}')

  def update(step, row):
    bar.update(step - bar.n)
    bar.set_postfix_str(
      f'loss {row["loss"]:.3f} acc {row["accuracy"]:.3f} '
      f'{row["tokens_per_s"]:,.0f} tok/s'
    )

  try:
    yield update
  finally:
    bar.close()
