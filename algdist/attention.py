"""Local self-attention with rotary positions, and its decoding KV cache.

A token attends to the tokens of the last `context_steps` env steps (those of
its own step causally), `visible` says which. Positions are relative (RoPE):
scores depend on the distance between query and key only, so the decoding
cache holds keys rotated once, by their ring slot (`Attention.decode`).
`Cache` is the ring buffer of those keys and values that
`model.Transformer.decode` steps through.

Shape letters: see algdist/__init__.py.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import struct

from algdist.model_config import ModelConfig, dense, tokens_per_step

# RoPE base wavelength, as in RoFormer.
_ROPE_WAVELENGTH = 10_000.0


def _rope(x_BxSxMxK, pos_S):
  """Rotates pairs of features by angles proportional to the positions."""
  half = x_BxSxMxK.shape[-1] // 2
  inv_freq = _ROPE_WAVELENGTH ** (-jnp.arange(half, dtype=jnp.float32) / half)
  angle_SxK = pos_S.astype(jnp.float32)[:, None] * inv_freq[None, :]
  sin = jnp.sin(angle_SxK)[None, :, None, :]
  cos = jnp.cos(angle_SxK)[None, :, None, :]
  x1, x2 = jnp.split(x_BxSxMxK.astype(jnp.float32), 2, axis=-1)
  out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
  return out.astype(x_BxSxMxK.dtype)


def visible(query_pos_Q, key_pos_C, config: ModelConfig):
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


def query_blocks(size: int, config: ModelConfig):
  """[(start, stop, first)]: query tokens [start, stop) of a sequence of
  `size` tokens and the first key token any of them sees.

  Blocks span a quarter of the context (whole steps): each attends to at
  most 1.25 contexts of keys where one S x S product would compute S.
  """
  per_step = tokens_per_step(config)
  block = max(config.context_steps // 4, 1) * per_step
  return [
    (
      start,
      min(start + block, size),
      max(start // per_step - config.context_steps + 1, 0) * per_step,
    )
    for start in range(0, size, block)
  ]


class Attention(nn.Module):
  """Multi-head self-attention with rotary positions."""

  config: ModelConfig

  def setup(self):
    cfg = self.config
    dtype = cfg.compute_dtype
    heads = (cfg.num_heads, cfg.head_dim)
    names = ('embed', 'heads', 'kv')
    self.query = dense(heads, names, dtype)
    self.key = dense(heads, names, dtype)
    self.value = dense(heads, names, dtype)
    self.out = dense(
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
    q_BxSxMxK, k_BxSxMxK, v_BxSxMxK = self._project(x_BxSxD)
    size = x_BxSxD.shape[1]
    pos_S = jnp.arange(size)
    q_BxSxMxK = _rope(q_BxSxMxK, pos_S)
    k_BxSxMxK = _rope(k_BxSxMxK, pos_S)
    # jax.nn.dot_product_attention has no dropout on the attention weights,
    # so training with it spells attention out (and forgoes fused kernels).
    explicit = cfg.attention_dropout > 0 and not deterministic
    if size <= cfg.context_tokens and not explicit:
      # Within the context, plain causal attention (fused kernels know it).
      out_BxSxMxK = jax.nn.dot_product_attention(
        q_BxSxMxK,
        k_BxSxMxK,
        v_BxSxMxK,
        is_causal=True,
        implementation=cfg.attention_impl,
      )
      return self.out(out_BxSxMxK)
    # Longer windows: query blocks, each against only the keys its sliding
    # window reaches, so the cost grows as S x context, not S^2 (3x faster
    # than one masked S x S product at 160 steps of 80; BENCHMARKS.md).
    outs = []
    for start, stop, first in query_blocks(size, cfg):
      mask_QxC = visible(jnp.arange(start, stop), jnp.arange(first, stop), cfg)
      q, k, v = (
        q_BxSxMxK[:, start:stop],
        k_BxSxMxK[:, first:stop],
        v_BxSxMxK[:, first:stop],
      )
      if explicit:
        outs.append(self._explicit_attention(q, k, v, mask_QxC))
      else:
        outs.append(
          jax.nn.dot_product_attention(
            q,
            k,
            v,
            mask=mask_QxC[None, None],
            implementation=cfg.attention_impl,
          )
        )
    return self.out(jnp.concatenate(outs, axis=1))

  def _explicit_attention(self, q_BxQxMxK, k_BxCxMxK, v_BxCxMxK, mask_QxC):
    """Masked softmax attention with dropout on the weights."""
    logits_BxMxQxC = jnp.einsum(
      'bqmk,bcmk->bmqc',
      q_BxQxMxK,
      k_BxCxMxK,
      preferred_element_type=jnp.float32,
    ) / jnp.sqrt(jnp.float32(q_BxQxMxK.shape[-1]))
    logits_BxMxQxC = jnp.where(
      mask_QxC, logits_BxMxQxC, jnp.finfo(jnp.float32).min
    )
    weights_BxMxQxC = jax.nn.softmax(logits_BxMxQxC, axis=-1)
    weights_BxMxQxC = self.weights_dropout(weights_BxMxQxC, deterministic=False)
    return jnp.einsum(
      'bmqc,bcmk->bqmk', weights_BxMxQxC.astype(v_BxCxMxK.dtype), v_BxCxMxK
    )

  def decode(self, x_BxQxD, keys_BxMxKxC, values_BxMxCxK, slots_Q, mask_QxC):
    """One step's Q tokens against the cache; returns the updated cache.

    The step's tokens go to ring slots `slots_Q`; `mask_QxC` says which
    cached tokens each query sees. Keys are cached rotated by their slot:
    RoPE scores depend only on the distance between query and key, and a
    key in slot j is sq - j tokens behind a query in slot sq if it was
    written on this lap of the ring (j <= sq), sq + C - j if on the last
    one. So the query is rotated twice, by sq and by sq + C, and each key is
    scored against the rotation of its lap: angles stay below 2C however
    long the rollout runs (float32 angles lose precision as positions grow),
    and no cached key is rotated again (rotating the whole cache every step
    took most of a rollout's time).
    """
    q_BxQxMxK, k_BxQxMxK, v_BxQxMxK = self._project(x_BxQxD)
    size = keys_BxMxKxC.shape[3]
    # Heads-major, keys [K, C] and values [C, K] per head: each is the
    # right-hand matrix of its product as the CPU's matmul reads it, in
    # place (measured: any other layout relaid a cache out every step).
    keys_BxMxKxC = jax.lax.dynamic_update_slice_in_dim(
      keys_BxMxKxC,
      _rope(k_BxQxMxK, slots_Q)
      .transpose(0, 2, 3, 1)
      .astype(keys_BxMxKxC.dtype),
      slots_Q[0],
      axis=3,
    )
    values_BxMxCxK = jax.lax.dynamic_update_slice_in_dim(
      values_BxMxCxK,
      v_BxQxMxK.transpose(0, 2, 1, 3).astype(values_BxMxCxK.dtype),
      slots_Q[0],
      axis=2,
    )
    # Written once: without the barrier XLA fused each write into both of
    # its readers (the carry and the product), copying the whole cache
    # twice per layer and step to do so; 5x slower rollouts at 1,024
    # steps of context (BENCHMARKS.md).
    keys_BxMxKxC, values_BxMxCxK = jax.lax.optimization_barrier(
      (keys_BxMxKxC, values_BxMxCxK)
    )
    # Both rotations of the query in one product: the cache is read once.
    queries_Bx2QxMxK = jnp.concatenate(
      [_rope(q_BxQxMxK, slots_Q), _rope(q_BxQxMxK, slots_Q + size)], axis=1
    )
    logits_BxMx2QxC = jnp.einsum(
      'bqmk,bmkc->bmqc',
      queries_Bx2QxMxK,
      keys_BxMxKxC,
      preferred_element_type=jnp.float32,
    )
    this_lap, last_lap = jnp.split(logits_BxMx2QxC, 2, axis=2)
    this_lap_QxC = jnp.arange(size)[None, :] <= slots_Q[:, None]
    logits_BxMxQxC = jnp.where(this_lap_QxC, this_lap, last_lap)
    logits_BxMxQxC = jnp.where(
      mask_QxC,
      logits_BxMxQxC / jnp.sqrt(jnp.float32(q_BxQxMxK.shape[-1])),
      jnp.finfo(jnp.float32).min,
    )
    weights_BxMxQxC = jax.nn.softmax(logits_BxMxQxC, axis=-1)
    out_BxQxMxK = jnp.einsum(
      'bmqc,bmck->bqmk',
      weights_BxMxQxC.astype(values_BxMxCxK.dtype),
      values_BxMxCxK,
    )
    return self.out(out_BxQxMxK), (keys_BxMxKxC, values_BxMxCxK)


@struct.dataclass
class Cache:
  """Ring buffer of the last `context_steps` env steps' keys and values."""

  keys: tuple[jax.Array, ...]  # per layer [B, M, K, C], rotated by slot
  values: tuple[jax.Array, ...]  # per layer [B, M, C, K]
  slot_pos: jax.Array  # [C] int32 absolute token index in each slot; -1 empty
  step: jax.Array  # [] int32 env steps decoded so far (index of the next)


def init_cache(config: ModelConfig, batch: int) -> Cache:
  """An empty cache for `batch` rollouts stepped in lockstep."""
  config.validate()
  heads, size = (batch, config.num_heads), config.context_tokens
  zeros = lambda *shape: tuple(
    jnp.zeros(shape, config.compute_dtype) for _ in range(config.num_layers)
  )
  return Cache(
    keys=zeros(*heads, config.head_dim, size),
    values=zeros(*heads, size, config.head_dim),
    slot_pos=jnp.full((config.context_tokens,), -1, jnp.int32),
    step=jnp.zeros((), jnp.int32),
  )
