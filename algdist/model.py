"""The causal transformer that predicts the source's next action in context.

Input is `sequence.Steps` [B, L]; output is logits over a_t at each step t.
Two token layouts: 'step' puts (o_t, a_{t-1}, r_{t-1}, start_t) into one token
per step; 'triple' makes three tokens per step, [a_{t-1}, r_{t-1}, o_t +
start_t], and reads the prediction at each step's last token.

Positions are relative (RoPE) and attention is local: a token attends to the
tokens of the last `context_steps` env steps (those of its own step
causally). Evaluation decodes one env step at a time against a ring-buffer
KV cache of those steps and gets exactly what `__call__` gives over the whole
trajectory (`__call__` on more than `context_steps` steps applies the same
sliding window), also after the ring wraps. With more than one layer that is
not the forward pass over the last `context_steps` steps alone: a cached key
of a deeper layer was computed within its own step's window, so information
reaches back up to num_layers * context_steps steps, as in any
sliding-window transformer. Up to context_steps steps the two coincide.

Parameters carry logical axis names (`AXIS_NAMES`) and key activations have
logical constraints; `algdist.sharding` maps them onto mesh axes.

Letters: B batch, L steps, S tokens (L * tokens per step), Q tokens of one
step, C cache slots, D model width, H heads, K head dim, F feed-forward
width, A actions, O observation shape.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import struct

from algdist import sequence

# Every logical axis name used on parameters and activations below.
AXIS_NAMES = (
  'batch',  # examples (activations only)
  'length',  # tokens (activations only)
  'embed',  # model width D
  'mlp',  # feed-forward width F
  'heads',  # attention heads H
  'kv',  # head dim K
  'vocab',  # actions, embedding rows
  'conv_in',  # conv input channels
  'conv_out',  # conv output channels
)

_ENCODERS = ('embed', 'dense', 'conv')
_TOKENS_PER_STEP = {'step': 1, 'triple': 3}
_NORMS = ('pre', 'post')
_DTYPES = ('float32', 'bfloat16', 'float16')
_ATTENTION_IMPLS = (None, 'xla', 'cudnn')
# (features, kernel, stride) of the pixel encoder, VALID padding: a DQN-style
# stack that takes 72x96 frames to 5x8x32 before the Dense to D.
_CONV_LAYERS = ((16, 8, 4), (32, 4, 2), (32, 3, 1))
# RoPE base wavelength, as in RoFormer.
_ROPE_WAVELENGTH = 10_000.0


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Architecture of the transformer; `validate()` checks it."""

  num_actions: int  # A: size of the env's action space
  # 'embed': int obs vector, one table of obs_vocab rows per entry, summed;
  # 'dense': float cast + Dense; 'conv': uint8 HxWxC image -> conv net.
  obs_encoder: str = 'embed'
  obs_vocab: int = 0  # rows per obs entry for 'embed' (e.g. the grid size)
  layout: str = 'step'  # 'step' (1 token per step) or 'triple' (3)
  context_steps: int = 80  # L: env steps in the context (window, ring buffer)
  num_layers: int = 4  # transformer blocks
  num_heads: int = 4  # H
  d_model: int = 64  # D: residual width
  d_ff: int = 256  # F: feed-forward hidden width
  dropout: float = 0.1  # embedding and residual dropout probability
  attention_dropout: float = 0.0  # dropout on attention weights
  norm: str = 'pre'  # 'pre' or 'post' LayerNorm
  dtype: str = 'float32'  # compute dtype; params stay float32
  # jax.nn.dot_product_attention(implementation=...): None, 'xla', 'cudnn'.
  attention_impl: str | None = None

  @property
  def head_dim(self) -> int:
    return self.d_model // self.num_heads

  @property
  def compute_dtype(self):
    return jnp.dtype(self.dtype)

  @property
  def context_tokens(self) -> int:
    return self.context_steps * tokens_per_step(self)

  def validate(self) -> None:
    """Raises ValueError naming every field that cannot work."""
    problems = []

    def check(ok, message):
      if not ok:
        problems.append(message)

    check(self.num_actions >= 1, f'num_actions={self.num_actions} must be >= 1')
    check(
      self.obs_encoder in _ENCODERS,
      f'obs_encoder={self.obs_encoder!r} must be one of {_ENCODERS}',
    )
    check(
      self.obs_encoder != 'embed' or self.obs_vocab > 0,
      f"obs_vocab={self.obs_vocab} must be > 0 with obs_encoder='embed' "
      '(the number of values one observation entry takes, e.g. grid size)',
    )
    check(
      self.layout in _TOKENS_PER_STEP,
      f'layout={self.layout!r} must be one of {tuple(_TOKENS_PER_STEP)}',
    )
    check(
      self.context_steps >= 1,
      f'context_steps={self.context_steps} must be >= 1',
    )
    check(self.num_layers >= 1, f'num_layers={self.num_layers} must be >= 1')
    check(self.num_heads >= 1, f'num_heads={self.num_heads} must be >= 1')
    check(self.d_ff >= 1, f'd_ff={self.d_ff} must be >= 1')
    if self.num_heads >= 1:
      check(
        self.d_model % self.num_heads == 0,
        f'd_model={self.d_model} must be divisible by '
        f'num_heads={self.num_heads}',
      )
      check(
        self.d_model // self.num_heads % 2 == 0,
        f'd_model / num_heads = {self.d_model // self.num_heads} (the head '
        'dim) must be even for rotary positions; change d_model or num_heads',
      )
    check(0.0 <= self.dropout < 1.0, f'dropout={self.dropout} not in [0, 1)')
    check(
      0.0 <= self.attention_dropout < 1.0,
      f'attention_dropout={self.attention_dropout} not in [0, 1)',
    )
    check(self.norm in _NORMS, f'norm={self.norm!r} must be one of {_NORMS}')
    check(self.dtype in _DTYPES, f'dtype={self.dtype!r} must be in {_DTYPES}')
    check(
      self.attention_impl in _ATTENTION_IMPLS,
      f'attention_impl={self.attention_impl!r} must be one of '
      f'{_ATTENTION_IMPLS}',
    )
    if problems:
      raise ValueError('Invalid ModelConfig: ' + '; '.join(problems) + '.')


def tokens_per_step(config: ModelConfig) -> int:
  """Tokens one env step occupies: 1 ('step') or 3 ('triple')."""
  return _TOKENS_PER_STEP[config.layout]


def _init(init, names: Sequence[str | None]):
  return nn.with_logical_partitioning(init, tuple(names))


def _dense(features, names, dtype, axis=-1, name=None):
  """DenseGeneral whose kernel has logical `names`; the bias the output's."""
  out_names = names[-1:] if isinstance(features, int) else names[-2:]
  return nn.DenseGeneral(
    features,
    axis=axis,
    dtype=dtype,
    param_dtype=jnp.float32,
    kernel_init=_init(nn.initializers.lecun_normal(), names),
    bias_init=_init(nn.initializers.zeros_init(), out_names),
    name=name,
  )


def _table(rows, features, dtype, name=None):
  """An embedding table of `rows` rows."""
  return nn.Embed(
    rows,
    features,
    dtype=dtype,
    param_dtype=jnp.float32,
    embedding_init=_init(nn.linear.default_embed_init, ('vocab', 'embed')),
    name=name,
  )


def _layer_norm(dtype, name=None):
  return nn.LayerNorm(
    dtype=dtype,
    param_dtype=jnp.float32,
    scale_init=_init(nn.initializers.ones_init(), ('embed',)),
    bias_init=_init(nn.initializers.zeros_init(), ('embed',)),
    name=name,
  )


def _rope(x_BxSxHxK, pos_S):
  """Rotates pairs of features by angles proportional to the positions."""
  half = x_BxSxHxK.shape[-1] // 2
  inv_freq = _ROPE_WAVELENGTH ** (-jnp.arange(half, dtype=jnp.float32) / half)
  angle_SxK = pos_S.astype(jnp.float32)[:, None] * inv_freq[None, :]
  sin = jnp.sin(angle_SxK)[None, :, None, :]
  cos = jnp.cos(angle_SxK)[None, :, None, :]
  x1, x2 = jnp.split(x_BxSxHxK.astype(jnp.float32), 2, axis=-1)
  out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
  return out.astype(x_BxSxHxK.dtype)


def _visible(query_pos_Q, key_pos_C, config: ModelConfig):
  """[Q, C] bool: which token positions each query token attends to.

  A key is visible if it exists (position >= 0), is not after the query, and
  belongs to one of the last `context_steps` env steps up to the query's.
  """
  per_step = tokens_per_step(config)
  query_step_Q = query_pos_Q // per_step
  key_step_C = key_pos_C // per_step
  return (
    (key_pos_C[None, :] >= 0)
    & (key_pos_C[None, :] <= query_pos_Q[:, None])
    & (key_step_C[None, :] > query_step_Q[:, None] - config.context_steps)
  )


class ObsEncoder(nn.Module):
  """Observations [B, L, *O] -> [B, L, D]."""

  config: ModelConfig

  @nn.compact
  def __call__(self, obs):
    cfg = self.config
    dtype = cfg.compute_dtype
    lead = obs.shape[:2]
    if cfg.obs_encoder == 'embed':
      if not jnp.issubdtype(obs.dtype, jnp.integer):
        raise ValueError(
          f"obs_encoder='embed' needs integer observations, got {obs.dtype}; "
          "use obs_encoder='dense' for float observations."
        )
      obs_BxLxO = obs.reshape(lead + (-1,))
      # One table per entry: the same value means different things in x and
      # y. Values must lie in [0, obs_vocab): larger ones embed as NaN,
      # negative ones wrap around (jnp.take semantics).
      return sum(
        _table(cfg.obs_vocab, cfg.d_model, dtype, f'entry_{i}')(
          obs_BxLxO[..., i]
        )
        for i in range(obs_BxLxO.shape[-1])
      )
    if cfg.obs_encoder == 'dense':
      x = obs.reshape(lead + (-1,)).astype(dtype)
      return _dense(cfg.d_model, (None, 'embed'), dtype, name='dense')(x)
    if obs.ndim != 5:
      raise ValueError(
        "obs_encoder='conv' needs image observations [B, L, H, W, C], got "
        f'shape {obs.shape}.'
      )
    # Frames are independent: fold time into the batch for the conv net.
    x = obs.reshape((-1,) + obs.shape[2:]).astype(dtype) / 255.0
    for i, (features, kernel, stride) in enumerate(_CONV_LAYERS):
      x = nn.Conv(
        features,
        (kernel, kernel),
        strides=(stride, stride),
        padding='VALID',
        dtype=dtype,
        param_dtype=jnp.float32,
        kernel_init=_init(
          nn.initializers.lecun_normal(), (None, None, 'conv_in', 'conv_out')
        ),
        bias_init=_init(nn.initializers.zeros_init(), ('conv_out',)),
        name=f'conv_{i}',
      )(x)
      x = nn.relu(x)
    x = x.reshape(x.shape[0], -1)
    x = _dense(cfg.d_model, (None, 'embed'), dtype, name='dense')(x)
    return x.reshape(lead + (cfg.d_model,))


class Embedder(nn.Module):
  """Steps [B, L] -> tokens [B, L * tokens_per_step, D]."""

  config: ModelConfig

  @nn.compact
  def __call__(self, steps: sequence.Steps):
    cfg = self.config
    dtype = cfg.compute_dtype
    table = lambda rows, name: _table(rows, cfg.d_model, dtype, name)
    obs_BxLxD = ObsEncoder(cfg, name='obs')(steps.obs)
    # num_actions + 1 rows: the last is sequence.no_action(num_actions).
    action_BxLxD = table(cfg.num_actions + 1, 'prev_action')(steps.prev_action)
    reward_BxLxD = _dense(
      cfg.d_model, (None, 'embed'), dtype, name='prev_reward'
    )(steps.prev_reward[..., None].astype(dtype))
    start_BxLxD = table(2, 'episode_start')(
      steps.episode_start.astype(jnp.int32)
    )
    if cfg.layout == 'step':
      return obs_BxLxD + action_BxLxD + reward_BxLxD + start_BxLxD
    # Which of the three a token is; its content alone does not always say
    # (a zero reward token is just the Dense bias).
    type_3xD = table(3, 'token_type')(jnp.arange(3))
    tokens_BxLx3xD = (
      jnp.stack([action_BxLxD, reward_BxLxD, obs_BxLxD + start_BxLxD], axis=2)
      + type_3xD
    )
    batch, steps_len = tokens_BxLx3xD.shape[:2]
    return tokens_BxLx3xD.reshape(batch, steps_len * 3, cfg.d_model)


class Attention(nn.Module):
  """Multi-head self-attention with rotary positions."""

  config: ModelConfig

  def setup(self):
    cfg = self.config
    dtype = cfg.compute_dtype
    heads = (cfg.num_heads, cfg.head_dim)
    names = ('embed', 'heads', 'kv')
    self.query = _dense(heads, names, dtype)
    self.key = _dense(heads, names, dtype)
    self.value = _dense(heads, names, dtype)
    self.out = _dense(
      cfg.d_model, ('heads', 'kv', 'embed'), dtype, axis=(-2, -1)
    )
    self.weights_dropout = nn.Dropout(cfg.attention_dropout)

  def _project(self, x_BxSxD):
    names = ('batch', 'length', 'heads', 'kv')
    return tuple(
      nn.with_logical_constraint(f(x_BxSxD), names)
      for f in (self.query, self.key, self.value)
    )

  def __call__(self, x_BxSxD, *, deterministic: bool):
    cfg = self.config
    q_BxSxHxK, k_BxSxHxK, v_BxSxHxK = self._project(x_BxSxD)
    size = x_BxSxD.shape[1]
    pos_S = jnp.arange(size)
    q_BxSxHxK = _rope(q_BxSxHxK, pos_S)
    k_BxSxHxK = _rope(k_BxSxHxK, pos_S)
    # Within context_steps, plain causal attention (fused kernels know it).
    mask_SxS = None
    if size > cfg.context_tokens:
      mask_SxS = _visible(pos_S, pos_S, cfg)
    if cfg.attention_dropout > 0 and not deterministic:
      # jax.nn.dot_product_attention has no dropout on the attention weights,
      # so training with it spells attention out (and forgoes fused kernels).
      if mask_SxS is None:
        mask_SxS = jnp.tril(jnp.ones((size, size), bool))
      out_BxSxHxK = self._explicit_attention(
        q_BxSxHxK, k_BxSxHxK, v_BxSxHxK, mask_SxS
      )
    else:
      out_BxSxHxK = jax.nn.dot_product_attention(
        q_BxSxHxK,
        k_BxSxHxK,
        v_BxSxHxK,
        mask=None if mask_SxS is None else mask_SxS[None, None],
        is_causal=mask_SxS is None,
        implementation=cfg.attention_impl,
      )
    return self.out(out_BxSxHxK)

  def _explicit_attention(self, q_BxSxHxK, k_BxSxHxK, v_BxSxHxK, mask_SxS):
    """Masked softmax attention with dropout on the weights."""
    logits_BxHxSxS = jnp.einsum(
      'bqhk,bshk->bhqs',
      q_BxSxHxK,
      k_BxSxHxK,
      preferred_element_type=jnp.float32,
    ) / jnp.sqrt(jnp.float32(q_BxSxHxK.shape[-1]))
    logits_BxHxSxS = jnp.where(
      mask_SxS, logits_BxHxSxS, jnp.finfo(jnp.float32).min
    )
    weights_BxHxSxS = jax.nn.softmax(logits_BxHxSxS, axis=-1)
    weights_BxHxSxS = self.weights_dropout(weights_BxHxSxS, deterministic=False)
    return jnp.einsum(
      'bhqs,bshk->bqhk', weights_BxHxSxS.astype(v_BxSxHxK.dtype), v_BxSxHxK
    )

  def decode(self, x_BxQxD, keys_BxCxHxK, values_BxCxHxK, slot, pos):
    """One step's Q tokens against the cache; returns the updated cache.

    `slot` is where this step's tokens go; `pos` holds window-relative query
    positions [Q], key positions [C] and the visibility mask [Q, C].
    """
    q_BxQxHxK, k_BxQxHxK, v_BxQxHxK = self._project(x_BxQxD)
    keys_BxCxHxK = jax.lax.dynamic_update_slice_in_dim(
      keys_BxCxHxK, k_BxQxHxK.astype(keys_BxCxHxK.dtype), slot, axis=1
    )
    values_BxCxHxK = jax.lax.dynamic_update_slice_in_dim(
      values_BxCxHxK, v_BxQxHxK.astype(values_BxCxHxK.dtype), slot, axis=1
    )
    out_BxQxHxK = jax.nn.dot_product_attention(
      _rope(q_BxQxHxK, pos['query']),
      _rope(keys_BxCxHxK, pos['key']),
      values_BxCxHxK,
      mask=pos['mask'][None, None],
      implementation=self.config.attention_impl,
    )
    return self.out(out_BxQxHxK), (keys_BxCxHxK, values_BxCxHxK)


class Mlp(nn.Module):
  """Position-wise feed-forward network."""

  config: ModelConfig

  @nn.compact
  def __call__(self, x_BxSxD):
    cfg = self.config
    dtype = cfg.compute_dtype
    h_BxSxF = _dense(cfg.d_ff, ('embed', 'mlp'), dtype, name='up')(x_BxSxD)
    h_BxSxF = nn.with_logical_constraint(
      nn.gelu(h_BxSxF), ('batch', 'length', 'mlp')
    )
    return _dense(cfg.d_model, ('mlp', 'embed'), dtype, name='down')(h_BxSxF)


class Block(nn.Module):
  """Attention and feed-forward, each with a residual and a LayerNorm."""

  config: ModelConfig

  def setup(self):
    cfg = self.config
    self.attention = Attention(cfg)
    self.mlp = Mlp(cfg)
    self.norm_attention = _layer_norm(cfg.compute_dtype)
    self.norm_mlp = _layer_norm(cfg.compute_dtype)
    self.residual_dropout = nn.Dropout(cfg.dropout)

  def _apply(self, x_BxSxD, attend, deterministic):
    drop = lambda y: self.residual_dropout(y, deterministic=deterministic)
    if self.config.norm == 'pre':
      h_BxSxD, extra = attend(self.norm_attention(x_BxSxD))
      x_BxSxD = x_BxSxD + drop(h_BxSxD)
      x_BxSxD = x_BxSxD + drop(self.mlp(self.norm_mlp(x_BxSxD)))
    else:
      h_BxSxD, extra = attend(x_BxSxD)
      x_BxSxD = self.norm_attention(x_BxSxD + drop(h_BxSxD))
      x_BxSxD = self.norm_mlp(x_BxSxD + drop(self.mlp(x_BxSxD)))
    x_BxSxD = nn.with_logical_constraint(x_BxSxD, ('batch', 'length', 'embed'))
    return x_BxSxD, extra

  def __call__(self, x_BxSxD, *, deterministic: bool):
    attend = lambda h: (self.attention(h, deterministic=deterministic), None)
    return self._apply(x_BxSxD, attend, deterministic)[0]

  def decode(self, x_BxQxD, keys, values, slot, pos):
    attend = lambda h: self.attention.decode(h, keys, values, slot, pos)
    return self._apply(x_BxQxD, attend, deterministic=True)


@struct.dataclass
class Cache:
  """Ring buffer of the last `context_steps` env steps' keys and values."""

  keys: tuple[jax.Array, ...]  # per layer [B, C, H, K], before rotation
  values: tuple[jax.Array, ...]  # per layer [B, C, H, K]
  slot_pos: jax.Array  # [C] int32 absolute token index in each slot; -1 empty
  step: jax.Array  # [] int32 env steps decoded so far (index of the next)


def init_cache(config: ModelConfig, batch: int) -> Cache:
  """An empty cache for `batch` rollouts stepped in lockstep."""
  config.validate()
  shape = (batch, config.context_tokens, config.num_heads, config.head_dim)
  zeros = tuple(
    jnp.zeros(shape, config.compute_dtype) for _ in range(config.num_layers)
  )
  return Cache(
    keys=zeros,
    values=zeros,
    slot_pos=jnp.full((config.context_tokens,), -1, jnp.int32),
    step=jnp.zeros((), jnp.int32),
  )


class Transformer(nn.Module):
  """Causal transformer: Steps [B, L] -> action logits [B, L, A]."""

  config: ModelConfig

  def setup(self):
    cfg = self.config
    cfg.validate()
    self.embedder = Embedder(cfg)
    self.embed_dropout = nn.Dropout(cfg.dropout)
    self.blocks = [Block(cfg) for _ in range(cfg.num_layers)]
    if cfg.norm == 'pre':
      # Post-norm blocks end normalised already.
      self.final_norm = _layer_norm(cfg.compute_dtype)
    # float32 head: logits feed a softmax / cross-entropy.
    self.head = _dense(cfg.num_actions, ('embed', 'vocab'), jnp.float32)

  def _embed(self, steps, deterministic):
    x_BxSxD = self.embedder(steps)
    x_BxSxD = nn.with_logical_constraint(x_BxSxD, ('batch', 'length', 'embed'))
    return self.embed_dropout(x_BxSxD, deterministic=deterministic)

  def _logits(self, x_BxLxD):
    if self.config.norm == 'pre':
      x_BxLxD = self.final_norm(x_BxLxD)
    return self.head(x_BxLxD.astype(jnp.float32))

  def __call__(
    self, steps: sequence.Steps, *, deterministic: bool
  ) -> jax.Array:
    """Logits [B, L, A] float32 of a_t given steps 0..t of the window.

    With L <= context_steps, plain causal attention; beyond, each token
    attends to the last context_steps steps only (the decode semantics).
    """
    cfg = self.config
    x_BxSxD = self._embed(steps, deterministic)
    for block in self.blocks:
      x_BxSxD = block(x_BxSxD, deterministic=deterministic)
    # The last token of each step has seen o_t: it predicts a_t.
    per_step = tokens_per_step(cfg)
    x_BxLxD = x_BxSxD[:, per_step - 1 :: per_step]
    logits_BxLxA = self._logits(x_BxLxD)
    return nn.with_logical_constraint(
      logits_BxLxA, ('batch', 'length', 'vocab')
    )

  def decode(
    self, step: sequence.Steps, cache: Cache
  ) -> tuple[jax.Array, Cache]:
    """One env step [B] -> (logits [B, A] float32, cache holding the step).

    At env step t this equals the step-t logits of `__call__` over steps
    0..t (see the module docstring). The new step's tokens overwrite those of
    step t - L, the one leaving the window. Keys are cached unrotated and
    rotated here with window-relative positions, the very positions the full
    forward pass over the last L steps uses: so positions stay in [0, C)
    however long the rollout runs (RoPE angles lose float precision as
    positions grow), at the price of one elementwise rotation of the cached
    keys per step.
    """
    cfg = self.config
    per_step = tokens_per_step(cfg)
    length = cfg.context_steps
    t = cache.step
    x_BxQxD = self._embed(
      jax.tree.map(lambda x: x[:, None], step), deterministic=True
    )
    query_pos_Q = t * per_step + jnp.arange(per_step, dtype=jnp.int32)
    slot = (t % length) * per_step
    slot_pos_C = jax.lax.dynamic_update_slice_in_dim(
      cache.slot_pos, query_pos_Q, slot, axis=0
    )
    mask_QxC = _visible(query_pos_Q, slot_pos_C, cfg)
    window_start = jnp.maximum(t - length + 1, 0) * per_step
    pos = {
      'query': query_pos_Q - window_start,
      'key': slot_pos_C - window_start,
      'mask': mask_QxC,
    }
    keys, values = [], []
    for block, k_BxCxHxK, v_BxCxHxK in zip(
      self.blocks, cache.keys, cache.values, strict=True
    ):
      x_BxQxD, (k_BxCxHxK, v_BxCxHxK) = block.decode(
        x_BxQxD, k_BxCxHxK, v_BxCxHxK, slot, pos
      )
      keys.append(k_BxCxHxK)
      values.append(v_BxCxHxK)
    logits_BxA = self._logits(x_BxQxD[:, -1])
    new_cache = Cache(
      keys=tuple(keys), values=tuple(values), slot_pos=slot_pos_C, step=t + 1
    )
    return logits_BxA, new_cache


def example_steps(
  config: ModelConfig, obs_shape, obs_dtype, batch: int = 1
) -> sequence.Steps:
  """All-zero Steps [batch, context_steps] for `init` and `jax.eval_shape`."""
  length = config.context_steps
  return sequence.make_step(
    jnp.zeros((batch, length, *obs_shape), obs_dtype),
    jnp.full((batch, length), sequence.no_action(config.num_actions)),
    jnp.zeros((batch, length)),
    jnp.ones((batch, length), bool),
  )


def num_params(params) -> int:
  """Number of scalars in a parameter tree (boxed, abstract or plain)."""
  return sum(math.prod(x.shape) for x in jax.tree.leaves(params))


def _encoder_macs(config: ModelConfig, obs_shape) -> int:
  """Multiply-adds of the obs encoder for one step (0 for tables)."""
  if obs_shape is None or config.obs_encoder == 'embed':
    return 0
  if config.obs_encoder == 'dense':
    return math.prod(obs_shape) * config.d_model
  height, width, channels = obs_shape
  macs = 0
  for features, kernel, stride in _CONV_LAYERS:
    height = (height - kernel) // stride + 1
    width = (width - kernel) // stride + 1
    macs += height * width * kernel * kernel * channels * features
    channels = features
  return macs + height * width * channels * config.d_model


def flops_per_token(config: ModelConfig, obs_shape=None) -> float:
  """Training FLOPs per token (forward + backward), for MFU.

  The standard estimate (Kaplan et al. 2020; PaLM, appendix B):
  6 * N + 12 * num_layers * d_model * context_tokens, with N the matmul
  weights of the blocks (4 D^2 attention + 2 D F feed-forward per layer),
  and the attention term counting QK^T and AV over the whole context (no
  discount for the causal mask). The head runs once per step, so it counts
  6 * D * A / tokens_per_step; given `obs_shape`, so does the obs encoder's
  multiply-adds (the conv net dominates a small model on pixels). Embedding
  lookups count nothing.
  """
  d, f = config.d_model, config.d_ff
  block_weights = config.num_layers * (4 * d * d + 2 * d * f)
  attention = 12 * config.num_layers * d * config.context_tokens
  per_step = 6 * (d * config.num_actions + _encoder_macs(config, obs_shape))
  return float(
    6 * block_weights + attention + per_step / tokens_per_step(config)
  )
