"""Local self-attention with rotary positions, and its decoding KV cache.

A token attends to the tokens of the last `context_steps` env steps (those of
its own step causally), `visible` says which. Positions are relative (RoPE),
so a key cached unrotated can be rotated at each decoding step with
window-relative positions. `Cache` is the ring buffer of those keys and
values that `model.Transformer.decode` steps through.

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
    # Within context_steps, plain causal attention (fused kernels know it).
    mask_SxS = None
    if size > cfg.context_tokens:
      mask_SxS = visible(pos_S, pos_S, cfg)
    if cfg.attention_dropout > 0 and not deterministic:
      # jax.nn.dot_product_attention has no dropout on the attention weights,
      # so training with it spells attention out (and forgoes fused kernels).
      if mask_SxS is None:
        mask_SxS = jnp.tril(jnp.ones((size, size), bool))
      out_BxSxMxK = self._explicit_attention(
        q_BxSxMxK, k_BxSxMxK, v_BxSxMxK, mask_SxS
      )
    else:
      out_BxSxMxK = jax.nn.dot_product_attention(
        q_BxSxMxK,
        k_BxSxMxK,
        v_BxSxMxK,
        mask=None if mask_SxS is None else mask_SxS[None, None],
        is_causal=mask_SxS is None,
        implementation=cfg.attention_impl,
      )
    return self.out(out_BxSxMxK)

  def _explicit_attention(self, q_BxSxMxK, k_BxSxMxK, v_BxSxMxK, mask_SxS):
    """Masked softmax attention with dropout on the weights."""
    logits_BxMxSxS = jnp.einsum(
      'bqmk,bsmk->bmqs',
      q_BxSxMxK,
      k_BxSxMxK,
      preferred_element_type=jnp.float32,
    ) / jnp.sqrt(jnp.float32(q_BxSxMxK.shape[-1]))
    logits_BxMxSxS = jnp.where(
      mask_SxS, logits_BxMxSxS, jnp.finfo(jnp.float32).min
    )
    weights_BxMxSxS = jax.nn.softmax(logits_BxMxSxS, axis=-1)
    weights_BxMxSxS = self.weights_dropout(weights_BxMxSxS, deterministic=False)
    return jnp.einsum(
      'bmqs,bsmk->bqmk', weights_BxMxSxS.astype(v_BxSxMxK.dtype), v_BxSxMxK
    )

  def decode(self, x_BxQxD, keys_BxCxMxK, values_BxCxMxK, slot, pos):
    """One step's Q tokens against the cache; returns the updated cache.

    `slot` is where this step's tokens go; `pos` holds window-relative query
    positions [Q], key positions [C] and the visibility mask [Q, C].
    """
    q_BxQxMxK, k_BxQxMxK, v_BxQxMxK = self._project(x_BxQxD)
    keys_BxCxMxK = jax.lax.dynamic_update_slice_in_dim(
      keys_BxCxMxK, k_BxQxMxK.astype(keys_BxCxMxK.dtype), slot, axis=1
    )
    values_BxCxMxK = jax.lax.dynamic_update_slice_in_dim(
      values_BxCxMxK, v_BxQxMxK.astype(values_BxCxMxK.dtype), slot, axis=1
    )
    out_BxQxMxK = jax.nn.dot_product_attention(
      _rope(q_BxQxMxK, pos['query']),
      _rope(keys_BxCxMxK, pos['key']),
      values_BxCxMxK,
      mask=pos['mask'][None, None],
      implementation=self.config.attention_impl,
    )
    return self.out(out_BxQxMxK), (keys_BxCxMxK, values_BxCxMxK)


@struct.dataclass
class Cache:
  """Ring buffer of the last `context_steps` env steps' keys and values."""

  keys: tuple[jax.Array, ...]  # per layer [B, C, M, K], before rotation
  values: tuple[jax.Array, ...]  # per layer [B, C, M, K]
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
