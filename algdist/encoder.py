"""Pretraining the pixel encoder to localise: pose regression from one frame.

Learned only through AD's action loss, a conv encoder learns where the
agent stands slowly, and AD's in-context search needs exactly that (issue
21, RESULTS.md: a pose-pretrained, frozen encoder lifted AD's last
episodes by about +0.9 platform visits at equal updates; a frozen random
one, not at all). With `model.encoder.pretrain_steps` > 0 the encoder
(model.ObsEncoder: the conv stack and its Dense to D) first learns to
regress the agent's pose, (x, y, cos heading, sin heading), from frames
the env renders at uniform poses (its `pose_views`), fresh every step.
AD and ED then start from it, and with `model.encoder.freeze` it stays as
pretrained (no gradient reaches it, which also skips the conv's backward
pass). The pose is an auxiliary training signal only: the model never
sees it as an input.

It is computed once per workdir, written to WORKDIR/encoder/ and shared
by AD and ED; a config whose encoder inputs differ recomputes it. With
`model.encoder.cache_embeddings` as well, training runs the frozen encoder
once over every frame of the histories (`embed_frames`) and its updates
read those D-wide outputs instead of the frames: the same model, without
the conv net in every update.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import serialization

from algdist import config_lib, envs, files, metrics, model

PARAMS_FILE = 'params.msgpack'
META_FILE = 'meta.json'
EMBED_FRAMES = 8192  # frames per call of `embed_frames`


class PoseHead(nn.Module):
  """Frames [N, H, W, 3] -> pose [N, 4] through the model's obs encoder."""

  config: model.ModelConfig

  @nn.compact
  def __call__(self, frames):
    x = model.ObsEncoder(self.config, name='obs')(frames[:, None])[:, 0]
    return nn.Dense(4, name='pose')(nn.relu(x))


def _inputs(config) -> dict:
  """What the pretrained encoder depends on (its meta.json); not `freeze`
  or `cache_embeddings`, which change only what training does with it."""
  encoder = config.model.encoder.to_dict()
  encoder.pop('freeze')
  encoder.pop('cache_embeddings')
  return {
    'env': config.env.to_dict(),
    'model': {k: config.model[k] for k in ('d_model', 'conv_layers', 'dtype')},
    'encoder': encoder,
  }


def check(config) -> None:
  """Raises ValueError naming what keeps `config` from pretraining."""
  e = config.model.encoder
  if e.pretrain_steps < 0 or e.batch_size < 1 or e.learning_rate <= 0:
    raise ValueError(
      f'model.encoder: pretrain_steps={e.pretrain_steps} must be >= 0, '
      f'batch_size={e.batch_size} >= 1, learning_rate={e.learning_rate} > 0.'
    )
  if e.pretrain_steps == 0 and not e.freeze:
    return
  env, _ = envs.make(config.env.name, **config.env.overrides.to_dict())
  cfg, _ = config_lib.model_config(config)
  if cfg.obs_encoder != 'conv' or not hasattr(env, 'pose_views'):
    raise ValueError(
      f'model.encoder pretrains a pixel encoder on poses the env renders; '
      f'{config.env.name} has no pose_views (or no pixels): set '
      'model.encoder.pretrain_steps=0 and model.encoder.freeze=False.'
    )
  if e.freeze and e.pretrain_steps == 0:
    raise ValueError(
      'model.encoder.freeze=True with pretrain_steps=0 would freeze a '
      'random encoder; set pretrain_steps.'
    )
  if e.cache_embeddings and not e.freeze:
    raise ValueError(
      'model.encoder.cache_embeddings=True needs freeze=True: a learning '
      "encoder's outputs change with every update."
    )


def pretrain(config, progress: bool = True) -> tuple[dict, dict]:
  """`(obs encoder params, {'pose_error': ...})`: `pretrain_steps` Adam
  steps of pose regression on fresh views; the error is the mean distance
  (arena units) between true and predicted positions on held-out views."""
  e = config.model.encoder
  env, params = envs.make(config.env.name, **config.env.overrides.to_dict())
  cfg, _ = config_lib.model_config(config)
  head = PoseHead(cfg)
  key_init, key_data, key_test = jax.random.split(jax.random.key(e.seed), 3)
  frames, _ = env.pose_views(key_init, 1, params)
  variables = nn.meta.unbox(head.init(key_init, frames))
  optimizer = optax.adam(e.learning_rate)
  loss = lambda p, x, y: jnp.mean((head.apply({'params': p}, x) - y) ** 2)

  # One update per call, not a scan: XLA:CPU runs a conv net several times
  # slower inside a loop body (see train.py).
  @functools.partial(jax.jit, donate_argnums=(0, 1))
  def step(p, opt_state, key):
    x, y = env.pose_views(key, e.batch_size, params)
    grads = jax.grad(loss)(p, x, y)
    updates, opt_state = optimizer.update(grads, opt_state, p)
    return optax.apply_updates(p, updates), opt_state

  p = variables['params']
  opt_state = optimizer.init(p)
  keys = jax.random.split(key_data, e.pretrain_steps)
  with metrics.progress(
    e.pretrain_steps, 0, progress, 'encoder', 'step'
  ) as bar:
    for i, key in enumerate(keys):
      p, opt_state = step(p, opt_state, key)
      if (i + 1) % 50 == 0 or i + 1 == len(keys):
        bar(i + 1, '')
  x, y = env.pose_views(key_test, 1024, params)
  guess = head.apply({'params': p}, x)
  error = float(jnp.mean(jnp.linalg.norm(guess[:, :2] - y[:, :2], axis=-1)))
  return p['obs'], {'pose_error': error}


def encoder_params(config, workdir: str) -> dict | None:
  """The pretrained obs encoder params of `workdir` (None when
  pretraining is off), pretrained and written first where missing or made
  from other inputs. Every process computes the same; process 0 writes."""
  if config.model.encoder.pretrain_steps == 0:
    return None
  directory = os.path.join(workdir, 'encoder')
  meta = files.read_json(
    os.path.join(directory, META_FILE), remedy='Delete it to pretrain again.'
  )
  if meta is not None and meta.get('inputs') == _json(_inputs(config)):
    cfg, obs = config_lib.model_config(config)
    frames = jax.ShapeDtypeStruct((1,) + obs.shape, obs.dtype)
    init = lambda key, x: PoseHead(cfg).init(key, x)['params']['obs']
    template = nn.meta.unbox(jax.eval_shape(init, jax.random.key(0), frames))
    with open(os.path.join(directory, PARAMS_FILE), 'rb') as f:
      return serialization.from_bytes(template, f.read())
  params, summary = pretrain(config)
  logging.info('Encoder pretrained: pose error %.3f.', summary['pose_error'])
  if jax.process_index() == 0:
    os.makedirs(directory, exist_ok=True)
    files.write_text(
      os.path.join(directory, PARAMS_FILE), serialization.to_bytes(params)
    )
    files.write_json(
      os.path.join(directory, META_FILE),
      {'inputs': _json(_inputs(config)), **summary},
    )
  return jax.tree.map(np.asarray, params)


def embed_frames(config, params: dict, dataset, progress: bool = True):
  """`dataset` with each frame of its histories replaced by the obs
  encoder's output under `params` ([H, T, D] float32), in host memory."""
  cfg, _ = config_lib.model_config(config)
  obs = dataset.history.obs  # [H, T, h, w, 3], memory-mapped
  rows = max(1, EMBED_FRAMES // obs.shape[1])  # histories per call
  out = np.empty(obs.shape[:2] + (cfg.d_model,), np.float32)
  with metrics.progress(
    len(obs), 0, progress, 'embed frames', 'history'
  ) as bar:
    for i in range(0, len(obs), rows):
      x = np.asarray(obs[i : i + rows])
      n = len(x)
      if n < rows:  # one shape, one compile
        x = np.concatenate([x, np.zeros((rows - n,) + x.shape[1:], x.dtype)])
      out[i : i + n] = np.asarray(_encode(cfg, params, x), np.float32)[:n]
      bar(i + n, '')
  history = dataset.history.replace(obs=out)
  return dataclasses.replace(dataset, history=history)


# Compiled once per model config: AD and ED embed the same frames alike.
@functools.partial(jax.jit, static_argnums=0)
def _encode(cfg: model.ModelConfig, params, frames):
  return model.ObsEncoder(cfg).apply({'params': params}, frames)


def _json(tree):
  """`tree` as JSON reads it back (tuples become lists)."""
  return json.loads(json.dumps(tree))
