"""Performance figures: `python -m algdist.bench [--filter SUBSTRING]`.

Prints one JSON object per line (contract in DESIGN.md):
`{"name": "<what>/<variant>", "value": float, "unit": str, "backend": str,
"devices": int, ...}`. Every benchmark compiles first, then reports the
median of a few timed runs, so compilation never counts.
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import sys
import time
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from algdist import (
  agents,
  config_lib,
  envs,
  model,
  rollout,
  sequence,
  sharding,
  train,
)


def time_call(
  fn: Callable[[], object], repeats: int = 3, warmup: bool = True
) -> tuple[float, float]:
  """`(seconds, compile_s)`: the median wall seconds of `fn()` after one
  untimed call, and how much longer that first call took (its compilation,
  whatever jit compiles inside `fn`). Without `warmup` (`fn` compiled
  ahead of time) there is no untimed call and compile_s is 0."""
  first = 0.0
  if warmup:
    start = time.perf_counter()
    jax.block_until_ready(fn())
    first = time.perf_counter() - start
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - start)
  seconds = statistics.median(times)
  return seconds, max(first - seconds, 0.0) if warmup else 0.0


def time_compiled(jitted, args: tuple, repeats: int = 1):
  """`(seconds, compile_s, compiled)`: `jitted` compiled ahead of time for
  `args` (timed apart), then the median wall seconds of `repeats` calls.

  No untimed warm-up call: for the long runs of the learning benchmarks it
  would double the row's time.
  """
  start = time.perf_counter()
  compiled = jitted.lower(*args).compile()
  compile_s = time.perf_counter() - start
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(compiled(*args))
    times.append(time.perf_counter() - start)
  return statistics.median(times), compile_s, compiled


def make_random_env_run(env, params, batch: int, num_steps: int):
  """A jitted `run(key)`: `batch` envs under a uniform random policy."""
  num_actions = env.action_space(params).n

  def run(key):
    key_reset, key_scan = jax.random.split(key)
    obs, state = jax.vmap(env.reset, in_axes=(0, None))(
      jax.random.split(key_reset, batch), params
    )

    def _env_step(carry, key_t):
      _, state, total = carry
      key_act, key_env = jax.random.split(key_t)
      action = jax.random.randint(key_act, (batch,), 0, num_actions)
      obs, state, reward, _, _, _ = jax.vmap(env.step, in_axes=(0, 0, 0, None))(
        jax.random.split(key_env, batch), state, action, params
      )
      # Observation and reward ride in the carry, so that every step must
      # produce them (XLA would drop work whose result is unused).
      return (obs, state, total + reward.sum()), None

    carry = (obs, state, jnp.float32(0))
    carry, _ = jax.lax.scan(
      _env_step, carry, jax.random.split(key_scan, num_steps)
    )
    return carry

  return jax.jit(run)


# Steps per timed run, per env: long enough to dwarf dispatch, short enough to
# keep each benchmark well under a minute on a 2-core CPU.
ENV_BENCH_STEPS = {
  'adversarial_bandit': 500,
  'dark_room': 500,
  'dark_room_hard': 500,
  'dark_key_to_door': 500,
  'watermaze': 10,
}


def bench_env_steps(name: str, batch: int = 4096) -> dict:
  """env_steps_per_s/<env>: random policy, `batch` envs, one jitted scan."""
  num_steps = ENV_BENCH_STEPS[name]
  env, params = envs.make(name)
  run = make_random_env_run(env, params, batch, num_steps)
  seconds, compile_s = time_call(lambda: run(jax.random.key(0)))
  return dict(
    value=batch * num_steps / seconds,
    unit='steps/s',
    batch=batch,
    steps=num_steps,
    compile_s=compile_s,
  )


def _learners(algorithm: str, env_name: str, num_learners: int, **config):
  """A jitted vmapped learning run, its inputs, and env steps per call."""
  env, params = envs.make(env_name)
  cfg, make_train = agents.get(algorithm, **config)
  train = make_train(cfg, env)
  tasks = env.tasks(params, 'train', num=num_learners)
  keys = jax.random.split(jax.random.key(0), num_learners)
  history = jax.eval_shape(train, keys[0], jax.tree.map(lambda x: x[0], tasks))
  steps = num_learners * history[1].action.size
  return train, keys, tasks, steps


def bench_learning_steps(
  algorithm: str, env_name: str, num_learners: int, **config
) -> dict:
  """learning_steps_per_s/<algo>/<env>: env steps consumed, updates included."""
  train, keys, tasks, steps = _learners(
    algorithm, env_name, num_learners, **config
  )
  seconds, compile_s, _ = time_compiled(jax.jit(jax.vmap(train)), (keys, tasks))
  return dict(
    value=steps / seconds,
    unit='steps/s',
    learners=num_learners,
    compile_s=compile_s,
    **config,
  )


def bench_vmap_speedup(
  algorithm: str, env_name: str, num_learners: int, **config
) -> dict:
  """vmap_speedup/<algo>/<env>: one vmapped call vs the learners one by one."""
  train, keys, tasks, _ = _learners(algorithm, env_name, num_learners, **config)
  # Slice the tasks outside the timed loop: only the learning is timed.
  singles = [
    jax.tree.map(lambda x, i=i: x[i], tasks) for i in range(num_learners)
  ]
  vmapped_s, compile_vmapped, _ = time_compiled(
    jax.jit(jax.vmap(train)), (keys, tasks)
  )
  # One compiled single-learner program: every task has the same shapes.
  start = time.perf_counter()
  single = jax.jit(train).lower(keys[0], singles[0]).compile()
  compile_single = time.perf_counter() - start
  start = time.perf_counter()
  jax.block_until_ready(
    [single(keys[i], singles[i]) for i in range(num_learners)]
  )
  looped_s = time.perf_counter() - start
  return dict(
    value=looped_s / vmapped_s,
    unit='x',
    learners=num_learners,
    vmapped_s=round(vmapped_s, 3),
    looped_s=round(looped_s, 3),
    compile_s=compile_vmapped + compile_single,
    **config,
  )


# bf16 dense matmul peak per chip, FLOP/s, for MFU (vendor data sheets).
PEAK_FLOPS = {
  'H100': 989e12,  # SXM; the PCIe card is 756e12
  'H200': 989e12,
  'A100': 312e12,
  'TPU v4': 275e12,
  'TPU v5 lite': 197e12,
  'TPU v5p': 459e12,
}


def _peak_flops(device) -> float | None:
  kind = getattr(device, 'device_kind', '')
  for name, flops in PEAK_FLOPS.items():
    if name.lower() in kind.lower():
      return flops
  return None


# Updates per timed call of the training benchmark: the loop runs up to
# train.log_every (100) per call; 20 keep the row under a minute on a CPU.
TRAIN_CHUNK = 20


def bench_train_tokens(
  env_name: str, attention_impl: str | None = None, preset: str | None = None
):
  """train_tokens_per_s/<env>[/...]: a config's model (`preset`), trained as
  `train_and_evaluate` runs it: a jitted chunk of `TRAIN_CHUNK` updates.

  Batches are random inputs of the right shapes (the loader is not timed:
  on the device it is one gather). `compile_s` is the chunk's compile time,
  apart. On an accelerator the row also carries MFU against the chip's
  bf16 peak.
  """
  config = config_lib.load_config(env_name, preset)
  config.model.attention_impl = attention_impl
  cfg, obs = config_lib.model_config(config)
  net = model.Transformer(cfg)
  optimizer, schedule = train.make_optimizer(config.train)
  mesh, rules = sharding.config_mesh(config.sharding)
  batch, steps = config.train.batch_size, config.data.window_steps
  rng = np.random.default_rng(0)
  high = max(cfg.obs_vocab, 1) if obs.dtype != np.uint8 else 256
  inputs = sequence.make_step(
    rng.integers(0, high, (batch, steps, *obs.shape)).astype(obs.dtype),
    rng.integers(0, cfg.num_actions + 1, (batch, steps)),
    rng.random((batch, steps)),
    rng.random((batch, steps)) < 0.05,
  )
  target = rng.integers(0, cfg.num_actions, (batch, steps)).astype(np.int32)
  with jax.set_mesh(mesh):
    init, abstract = train.state_layout(
      net,
      optimizer,
      model.example_steps(cfg, obs.shape, obs.dtype),
      mesh,
      rules,
    )
    state = train.init_state(init, abstract, seed=0)
    shard = lambda x: sharding.batch_sharding(mesh, rules, x.ndim)
    data = jax.device_put(
      (inputs, target), jax.tree.map(shard, (inputs, target))
    )
    chunk = jax.jit(
      train.make_train_chunk(
        train.make_train_step(net, optimizer, schedule),
        lambda step: data,
        TRAIN_CHUNK,
      ),
      donate_argnums=0,
    )
    start = time.perf_counter()
    chunk = chunk.lower(state, TRAIN_CHUNK).compile()
    compile_s = time.perf_counter() - start
    holder = [state]

    def updates(num=TRAIN_CHUNK):
      holder[0], metrics = chunk(holder[0], num)
      return metrics

    # The chunk's length is traced: one update warms it up (the first call
    # after compiling runs slower), a tenth of a full untimed chunk's time.
    jax.block_until_ready(updates(1))
    seconds = time_call(updates, repeats=2, warmup=False)[0] / TRAIN_CHUNK
  tokens_per_s = batch * steps / seconds
  flops = model.flops_per_token(cfg, obs.shape) * tokens_per_s
  row = dict(
    value=tokens_per_s,
    unit='tokens/s',
    params=model.num_params(state.params),
    batch=batch,
    window_steps=steps,
    dtype=cfg.dtype,
    tflops_per_s=round(flops / 1e12, 4),
    updates_per_call=TRAIN_CHUNK,
    compile_s=compile_s,
  )
  peak = _peak_flops(jax.devices()[0])
  if peak is not None:
    row['mfu'] = flops / (peak * jax.device_count())
  return row


def _eval_model_config(context: int) -> model.ModelConfig:
  env, env_params = envs.make('dark_room')
  return model.ModelConfig(
    num_actions=env.action_space(env_params).n,
    obs_encoder='embed',
    obs_vocab=env_params.size,
    context_steps=context,
    dropout=0.0,
  )


@functools.cache
def _eval_model_params():
  """Random weights of the evaluation rows' model, made once: they do not
  depend on the context (initialising at 1,024 steps took 3 s a row)."""
  cfg = _eval_model_config(8)
  example = model.example_steps(cfg, (2,), jnp.int32)
  net = model.Transformer(cfg)
  init = lambda key: net.init(key, example, deterministic=True)['params']
  return nn.meta.unbox(jax.jit(init)(jax.random.key(0)))


def bench_eval_steps(
  context: int,
  cached: bool,
  batch: int | None = None,
  num_steps: int | None = None,
) -> dict:
  """eval_steps_per_s/<kv_cache|recompute>/<context>: Dark Room rollouts.

  The paper-shaped Dark Room model (4 layers, width 64) with random
  weights acts in `batch` envs; env steps per second after compilation.
  The recompute variant reruns the full forward pass over the last
  `context` steps each step, as implementations without a cache do (exact
  for one layer; here it stands for their cost); it runs 16 envs, not 64
  (its step is compute-bound, so steps/s hardly depend on the batch, and
  at 1,024 steps of context one step of 64 took 6 s of the bench).
  """
  if batch is None:
    batch = 64 if cached else 16
  env, env_params = envs.make('dark_room')
  cfg = _eval_model_config(context)
  net = model.Transformer(cfg)
  params = _eval_model_params()
  if num_steps is None:
    # Every step costs the same (the cache always attends over its C slots;
    # recompute always runs over its full buffer), so a few steps suffice;
    # recompute at 1,024 steps of context takes seconds per step on a CPU.
    num_steps = 128 if cached else max(1, 1024 // context)
  model_rollout = rollout.make_rollout(
    env, net, num_steps, cached=cached, window=None if cached else context
  )
  tasks = env.tasks(env_params, 'train', num=batch)
  keys = jax.random.split(jax.random.key(0), batch)
  run = jax.jit(jax.vmap(model_rollout, (0, None, 0)))
  start = time.perf_counter()
  compiled = run.lower(keys, params, tasks).compile()
  compile_s = time.perf_counter() - start
  # One untimed call: the first after compiling pays one-time costs (a
  # third of a cached row's half second).
  seconds, _ = time_call(lambda: compiled(keys, params, tasks), repeats=1)
  return dict(
    value=batch * num_steps / seconds,
    unit='steps/s',
    batch=batch,
    steps=num_steps,
    context=context,
    compile_s=compile_s,
  )


def benchmarks() -> dict[str, Callable[[], dict]]:
  """Every benchmark by name; each returns its row without name/backend."""
  table = {}
  for env_name in ENV_BENCH_STEPS:
    table[f'env_steps_per_s/{env_name}'] = functools.partial(
      bench_env_steps, env_name
    )
  # 1,024 independent learners of one actor each, 20 updates of 20 steps.
  for algorithm in ('ppo', 'a2c'):
    table[f'learning_steps_per_s/{algorithm}/dark_room'] = functools.partial(
      bench_learning_steps,
      algorithm,
      'dark_room',
      1024,
      num_actors=1,
      num_updates=20,
    )
  # DQN as the paper's Watermaze source: 4 learners of 16 actors, short runs
  # (each learner keeps its whole pixel history in memory); learning from
  # the 256th transition (16 actors: env step 16) of 400, so that nearly
  # every step pays for its share of an update.
  table['learning_steps_per_s/dqn/watermaze'] = functools.partial(
    bench_learning_steps,
    'dqn',
    'watermaze',
    4,
    num_steps=400,
    learning_starts=256,
  )
  table['vmap_speedup/ppo/dark_room'] = functools.partial(
    bench_vmap_speedup, 'ppo', 'dark_room', 64, num_actors=1, num_updates=20
  )
  # The paper-shaped Dark Room model (4 layers, batches of 32 x 160 steps;
  # the `ppo` preset's, the default's until issue 18): the row kept its
  # name so that figures stay comparable across sessions.
  for env_name, preset in (('dark_room', 'ppo'),):
    table[f'train_tokens_per_s/{env_name}'] = functools.partial(
      bench_train_tokens, env_name, preset=preset
    )
    if jax.default_backend() == 'gpu':
      for impl in ('xla', 'cudnn'):
        table[f'train_tokens_per_s/{env_name}/{impl}'] = functools.partial(
          bench_train_tokens, env_name, impl, preset
        )
  # The model the README's Dark Room command trains (the default's and
  # `ad_epsilon`'s: 2 layers, batches of 16 x 160 steps): the laptop user's
  # training pace.
  table['train_tokens_per_s/dark_room/ad_epsilon'] = functools.partial(
    bench_train_tokens, 'dark_room', preset='ad_epsilon'
  )
  # In-context rollouts of the Dark Room default model, 64 in parallel.
  for context in (256, 1024):
    for name, cached in (('kv_cache', True), ('recompute', False)):
      table[f'eval_steps_per_s/{name}/{context}'] = functools.partial(
        bench_eval_steps, context, cached
      )
  return table


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument(
    '--filter', default='', help='run the benchmarks whose name has this'
  )
  args = parser.parse_args(argv)
  table = benchmarks()
  selected = [name for name in table if args.filter in name]
  if not selected:
    sys.exit(
      f"No benchmark matches --filter '{args.filter}'. Known: "
      f'{", ".join(table)}.'
    )
  for name in selected:
    start = time.perf_counter()
    row = table[name]()
    # The row's whole cost (setup, compiles, timed runs): what the bench's
    # wall time is made of.
    row['wall_s'] = round(time.perf_counter() - start, 2)
    row = dict(
      name=name,
      value=round(row.pop('value'), 2),
      unit=row.pop('unit'),
      backend=jax.default_backend(),
      devices=jax.device_count(),
      **row,
    )
    row['compile_s'] = round(row['compile_s'], 2)
    print(json.dumps(row), flush=True)


if __name__ == '__main__':
  main()
