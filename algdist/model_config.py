"""What the transformer is, apart from the Flax modules that compute it.

ModelConfig and what follows from it alone (validation, tokens per step,
training FLOPs), the logical axis names, and the factories that declare
parameters under those names. Apart from model.py so that a model can be
checked and costed without building it, and every module of the network
can build on these without an import cycle.

Shape letters: see algdist/__init__.py.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import flax.linen as nn
import jax.numpy as jnp

# Every logical axis name used on parameters and activations (model.py,
# attention.py).
AXIS_NAMES = (
  'batch',  # examples (activations only)
  'length',  # tokens (activations only)
  'embed',  # model width D
  'mlp',  # feed-forward width F
  'heads',  # attention heads M
  'kv',  # head width K
  'vocab',  # actions, embedding rows
  'conv_in',  # conv input channels
  'conv_out',  # conv output channels
)

_ENCODERS = ('embed', 'dense', 'conv')
_TOKENS_PER_STEP = {'step': 1, 'triple': 3}
_NORMS = ('pre', 'post')
_DTYPES = ('float32', 'bfloat16', 'float16')
_ATTENTION_IMPLS = (None, 'xla', 'cudnn')
# (features, kernel, stride) of the pixel encoder's layers, VALID padding,
# by default a DQN-style stack that takes 72x96 frames to 5x8x32 before the
# Dense to D (ModelConfig.conv_layers; smaller frames want a smaller stack).
CONV_LAYERS = ((16, 8, 4), (32, 4, 2), (32, 3, 1))


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Architecture of the transformer; `validate()` checks it."""

  num_actions: int  # A: size of the env's action space
  # 'embed': int obs vector, one table of obs_vocab rows per entry, summed;
  # 'dense': float cast + Dense; 'conv': uint8 image, O = height x width x
  # channels -> conv net.
  obs_encoder: str = 'embed'
  obs_vocab: int = 0  # rows per obs entry for 'embed' (e.g. the grid size)
  layout: str = 'step'  # 'step' (1 token per step) or 'triple' (3)
  context_steps: int = 80  # L: env steps in the context (window, ring buffer)
  num_layers: int = 4  # transformer blocks
  num_heads: int = 4  # M: attention heads
  d_model: int = 64  # D: residual width
  d_ff: int = 256  # F: feed-forward hidden width
  dropout: float = 0.1  # embedding and residual dropout probability
  attention_dropout: float = 0.0  # dropout on attention weights
  norm: str = 'pre'  # 'pre' or 'post' LayerNorm
  dtype: str = 'float32'  # compute dtype; params stay float32
  # jax.nn.dot_product_attention(implementation=...): None, 'xla', 'cudnn'.
  attention_impl: str | None = None
  # (features, kernel, stride) per conv layer of obs_encoder='conv'.
  conv_layers: tuple = CONV_LAYERS
  # No gradient reaches the obs encoder (pretrained: algdist/encoder.py).
  freeze_encoder: bool = False

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
    check(
      len(self.conv_layers) >= 1
      and all(
        len(layer) == 3 and all(int(v) >= 1 for v in layer)
        for layer in self.conv_layers
      ),
      f'conv_layers={self.conv_layers} must be one or more (features, '
      'kernel, stride) of positive integers',
    )
    if problems:
      raise ValueError('Invalid ModelConfig: ' + '; '.join(problems) + '.')

  def conv_output(self, height: int, width: int) -> tuple[int, int]:
    """(height, width) of a frame after the conv stack; a ValueError naming
    the layer a frame this small does not survive."""
    for i, (_, kernel, stride) in enumerate(self.conv_layers):
      if height < kernel or width < kernel:
        raise ValueError(
          f'conv_layers[{i}] has kernel {kernel}, but the frame is '
          f'{height}x{width} there: use smaller kernels or strides '
          f'(model.conv_layers) for {height}x{width} input.'
        )
      height = (height - kernel) // stride + 1
      width = (width - kernel) // stride + 1
    return height, width


def tokens_per_step(config: ModelConfig) -> int:
  """Tokens one env step occupies: 1 ('step') or 3 ('triple')."""
  return _TOKENS_PER_STEP[config.layout]


def named_init(init, names: Sequence[str | None]):
  """`init` whose parameter carries the logical axis `names`."""
  return nn.with_logical_partitioning(init, tuple(names))


def dense(features, names, dtype, axis=-1, name=None):
  """DenseGeneral whose kernel has logical `names`; the bias the output's."""
  out_names = names[-1:] if isinstance(features, int) else names[-2:]
  return nn.DenseGeneral(
    features,
    axis=axis,
    dtype=dtype,
    param_dtype=jnp.float32,
    kernel_init=named_init(nn.initializers.lecun_normal(), names),
    bias_init=named_init(nn.initializers.zeros_init(), out_names),
    name=name,
  )


def table(rows, features, dtype, name=None):
  """An embedding table of `rows` rows."""
  return nn.Embed(
    rows,
    features,
    dtype=dtype,
    param_dtype=jnp.float32,
    embedding_init=named_init(nn.linear.default_embed_init, ('vocab', 'embed')),
    name=name,
  )


def layer_norm(dtype, name=None):
  """LayerNorm whose scale and bias are named 'embed'."""
  return nn.LayerNorm(
    dtype=dtype,
    param_dtype=jnp.float32,
    scale_init=named_init(nn.initializers.ones_init(), ('embed',)),
    bias_init=named_init(nn.initializers.zeros_init(), ('embed',)),
    name=name,
  )


def _encoder_macs(config: ModelConfig, obs_shape) -> int:
  """Multiply-adds of the obs encoder for one step (0 for tables)."""
  if obs_shape is None or config.obs_encoder == 'embed':
    return 0
  if config.obs_encoder == 'dense':
    return math.prod(obs_shape) * config.d_model
  height, width, channels = obs_shape
  macs = 0
  for features, kernel, stride in config.conv_layers:
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
