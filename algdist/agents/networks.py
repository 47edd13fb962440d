"""Observation encodings shared by the source agents' networks."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

# Integer observations with at most this many values per entry are one-hot
# encoded (grid coordinates); anything larger is treated as a number.
MAX_ONE_HOT = 64


def obs_encoder(env, params):
  """`encode(obs_BxO) -> float32 [B, I]` suited to the env's observations.

  Small integer vectors (grid cells) become concatenated one-hot codes, so an
  MLP can tell cells apart; uint8 images are scaled to [0, 1] and flattened;
  anything else is flattened as float.
  """
  space = env.observation_space(params)
  dtype = jnp.dtype(space.dtype)
  low = np.asarray(space.low)
  high = np.asarray(space.high)
  if jnp.issubdtype(dtype, jnp.integer) and dtype != jnp.uint8:
    sizes = np.broadcast_to(high - low + 1, space.shape).ravel()
    if np.all(sizes <= MAX_ONE_HOT):
      offsets = np.broadcast_to(low, space.shape).ravel()
      num_values = int(sizes.max())

      def encode(obs):
        flat = obs.reshape(obs.shape[: obs.ndim - len(space.shape)] + (-1,))
        codes = jax.nn.one_hot(flat - offsets, num_values)
        return codes.reshape(codes.shape[:-2] + (-1,))

      return encode
  scale = 1.0 / 255.0 if dtype == jnp.uint8 else 1.0

  def encode(obs):
    flat = obs.reshape(obs.shape[: obs.ndim - len(space.shape)] + (-1,))
    return flat.astype(jnp.float32) * scale

  return encode
