"""The causal transformer that predicts the source's next action in context.

Input is `sequence.Steps` [B, L]; output is logits over a_t at each step t.
Two token layouts: 'step' puts (o_t, a_{t-1}, r_{t-1}, start_t) into one token
per step; 'triple' makes three tokens per step, [a_{t-1}, r_{t-1}, o_t +
start_t], and reads the prediction at each step's last token.

Positions are relative (RoPE) and attention is local (`algdist.attention`): a
token attends to the tokens of the last `context_steps` env steps (those of
its own step causally). Evaluation decodes one env step at a time against a
ring-buffer KV cache of those steps and gets exactly what `__call__` gives
over the whole trajectory (`__call__` on more than `context_steps` steps
applies the same sliding window), also after the ring wraps. With more than
one layer that is not the forward pass over the last `context_steps` steps
alone: a cached key of a deeper layer was computed within its own step's
window, so information reaches back up to num_layers * context_steps steps,
as in any sliding-window transformer. Up to context_steps steps the two
coincide.

Parameters carry logical axis names (`AXIS_NAMES`, declared with ModelConfig
in `algdist.model_config`) and key activations have logical constraints;
`algdist.sharding` maps them onto mesh axes.

Shape letters: see algdist/__init__.py.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from algdist import sequence
from algdist.attention import Attention, visible

# Cache and init_cache are re-exported: rollouts build their decoding state
# through `model` alone.
from algdist.attention import Cache as Cache
from algdist.attention import init_cache as init_cache

# AXIS_NAMES and flops_per_token are re-exported (the `X as X` imports):
# callers build, shard and cost a model through `model` alone.
from algdist.model_config import AXIS_NAMES as AXIS_NAMES
from algdist.model_config import CONV_LAYERS as CONV_LAYERS
from algdist.model_config import (
  ModelConfig,
  dense,
  layer_norm,
  named_init,
  table,
  tokens_per_step,
)
from algdist.model_config import flops_per_token as flops_per_token


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
        table(cfg.obs_vocab, cfg.d_model, dtype, f'entry_{i}')(
          obs_BxLxO[..., i]
        )
        for i in range(obs_BxLxO.shape[-1])
      )
    if cfg.obs_encoder == 'dense':
      x = obs.reshape(lead + (-1,)).astype(dtype)
      return dense(cfg.d_model, (None, 'embed'), dtype, name='dense')(x)
    if obs.ndim != 5:
      raise ValueError(
        "obs_encoder='conv' needs image observations [B, L, height, width, "
        f'channels], got shape {obs.shape}.'
      )
    # Frames are independent: fold time into the batch for the conv net.
    x = obs.reshape((-1,) + obs.shape[2:]).astype(dtype) / 255.0
    for i, (features, kernel, stride) in enumerate(cfg.conv_layers):
      x = nn.Conv(
        features,
        (kernel, kernel),
        strides=(stride, stride),
        padding='VALID',
        dtype=dtype,
        param_dtype=jnp.float32,
        kernel_init=named_init(
          nn.initializers.lecun_normal(), (None, None, 'conv_in', 'conv_out')
        ),
        bias_init=named_init(nn.initializers.zeros_init(), ('conv_out',)),
        name=f'conv_{i}',
      )(x)
      x = nn.relu(x)
    x = x.reshape(x.shape[0], -1)
    x = dense(cfg.d_model, (None, 'embed'), dtype, name='dense')(x)
    return x.reshape(lead + (cfg.d_model,))


class Embedder(nn.Module):
  """Steps [B, L] -> tokens [B, L * tokens_per_step, D]."""

  config: ModelConfig

  @nn.compact
  def __call__(self, steps: sequence.Steps):
    cfg = self.config
    dtype = cfg.compute_dtype
    embed = lambda rows, name: table(rows, cfg.d_model, dtype, name)
    if cfg.obs_encoder == 'conv' and steps.obs.ndim == 3:
      # [B, L, D]: the frozen encoder's outputs, computed once per frame
      # before training (encoder.embed_frames), not frames.
      if not cfg.freeze_encoder:
        raise ValueError(
          "Observations of shape [B, L, D] stand for a frozen encoder's "
          "outputs; this model's encoder is not frozen."
        )
      obs_BxLxD = steps.obs.astype(dtype)
    else:
      obs_BxLxD = ObsEncoder(cfg, name='obs')(steps.obs)
    if cfg.freeze_encoder:  # and XLA drops the encoder's backward pass
      obs_BxLxD = jax.lax.stop_gradient(obs_BxLxD)
    # num_actions + 1 rows: the last is sequence.no_action(num_actions).
    action_BxLxD = embed(cfg.num_actions + 1, 'prev_action')(steps.prev_action)
    reward_BxLxD = dense(
      cfg.d_model, (None, 'embed'), dtype, name='prev_reward'
    )(steps.prev_reward[..., None].astype(dtype))
    start_BxLxD = embed(2, 'episode_start')(
      steps.episode_start.astype(jnp.int32)
    )
    if cfg.layout == 'step':
      return obs_BxLxD + action_BxLxD + reward_BxLxD + start_BxLxD
    # Which of the three a token is; its content alone does not always say
    # (a zero reward token is just the Dense bias).
    type_3xD = embed(3, 'token_type')(jnp.arange(3))
    tokens_BxLx3xD = (
      jnp.stack([action_BxLxD, reward_BxLxD, obs_BxLxD + start_BxLxD], axis=2)
      + type_3xD
    )
    batch, steps_len = tokens_BxLx3xD.shape[:2]
    return tokens_BxLx3xD.reshape(batch, steps_len * 3, cfg.d_model)


class Mlp(nn.Module):
  """Position-wise feed-forward network."""

  config: ModelConfig

  @nn.compact
  def __call__(self, x_BxSxD):
    cfg = self.config
    dtype = cfg.compute_dtype
    h_BxSxF = dense(cfg.d_ff, ('embed', 'mlp'), dtype, name='up')(x_BxSxD)
    h_BxSxF = nn.with_logical_constraint(
      nn.gelu(h_BxSxF), ('batch', 'length', 'mlp')
    )
    return dense(cfg.d_model, ('mlp', 'embed'), dtype, name='down')(h_BxSxF)


class Block(nn.Module):
  """Attention and feed-forward, each with a residual and a LayerNorm."""

  config: ModelConfig

  def setup(self):
    cfg = self.config
    self.attention = Attention(cfg)
    self.mlp = Mlp(cfg)
    self.norm_attention = layer_norm(cfg.compute_dtype)
    self.norm_mlp = layer_norm(cfg.compute_dtype)
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

  def decode(self, x_BxQxD, keys, values, slots_Q, mask_QxC):
    attend = lambda h: self.attention.decode(h, keys, values, slots_Q, mask_QxC)
    return self._apply(x_BxQxD, attend, deterministic=True)


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
      self.final_norm = layer_norm(cfg.compute_dtype)
    # float32 head: logits feed a softmax / cross-entropy.
    self.head = dense(cfg.num_actions, ('embed', 'vocab'), jnp.float32)

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
    step t - L, the one leaving the window. Keys are cached rotated by
    their ring slot, and each query is scored by its distance to them
    (`attention.Attention.decode`): angles stay below 2C however long the
    rollout runs, as they do in the full forward pass over a window.
    """
    cfg = self.config
    per_step = tokens_per_step(cfg)
    length = cfg.context_steps
    t = cache.step
    x_BxQxD = self._embed(
      jax.tree.map(lambda x: x[:, None], step), deterministic=True
    )
    query_pos_Q = t * per_step + jnp.arange(per_step, dtype=jnp.int32)
    slots_Q = (t % length) * per_step + jnp.arange(per_step, dtype=jnp.int32)
    slot_pos_C = jax.lax.dynamic_update_slice_in_dim(
      cache.slot_pos, query_pos_Q, slots_Q[0], axis=0
    )
    mask_QxC = visible(query_pos_Q, slot_pos_C, cfg)
    keys, values = [], []
    for block, k_BxMxKxC, v_BxMxCxK in zip(
      self.blocks, cache.keys, cache.values, strict=True
    ):
      x_BxQxD, (k_BxMxKxC, v_BxMxCxK) = block.decode(
        x_BxQxD, k_BxMxKxC, v_BxMxCxK, slots_Q, mask_QxC
      )
      keys.append(k_BxMxKxC)
      values.append(v_BxMxCxK)
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
