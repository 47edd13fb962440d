"""The causal transformer: causality, cache == recompute, shapes, training."""

import dataclasses

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import PartitionSpec as P

from algdist import attention, model, sequence
from algdist.agents import base

NUM_ACTIONS = 5
TINY = model.ModelConfig(
  num_actions=NUM_ACTIONS,
  obs_encoder='embed',
  obs_vocab=9,
  context_steps=6,
  num_layers=2,
  num_heads=2,
  d_model=16,
  d_ff=32,
  dropout=0.0,
)


def _steps(config, batch, length, obs_shape=(2,), seed=0):
  """Model inputs of random histories [batch, length] suiting `config`."""
  rng = np.random.default_rng(seed)
  shape = (batch, length)
  if config.obs_encoder == 'embed':
    obs = rng.integers(0, config.obs_vocab, shape + obs_shape).astype(np.int32)
  elif config.obs_encoder == 'dense':
    obs = rng.normal(size=shape + obs_shape).astype(np.float32)
  else:
    obs = rng.integers(0, 256, shape + obs_shape).astype(np.uint8)
  history = base.History(
    obs=obs,
    action=rng.integers(0, config.num_actions, shape).astype(np.int32),
    reward=rng.normal(size=shape).astype(np.float32),
    episode_start=rng.random(shape) < 0.2,
  )
  steps, target = sequence.model_inputs(history, config.num_actions)
  return jax.tree.map(jnp.asarray, steps), jnp.asarray(target)


def _init(config, obs_shape=(2,), obs_dtype=jnp.int32, seed=0):
  net = model.Transformer(config)
  example = model.example_steps(config, obs_shape, obs_dtype, batch=2)
  return net, net.init(jax.random.key(seed), example, deterministic=True)


def _forward(net, variables, steps):
  """Deterministic logits."""
  return net.apply(variables, steps, deterministic=True)


@pytest.mark.parametrize(
  'encoder, obs_shape, obs_dtype',
  [
    ('embed', (2,), jnp.int32),
    ('dense', (3,), jnp.float32),
    ('conv', (72, 96, 3), jnp.uint8),
  ],
)
def test_logits_are_float32_batch_by_steps_by_actions(
  encoder, obs_shape, obs_dtype
):
  config = dataclasses.replace(TINY, obs_encoder=encoder)
  net, variables = _init(config, obs_shape, obs_dtype)
  steps, _ = _steps(config, batch=2, length=4, obs_shape=obs_shape)
  assert steps.obs.dtype == obs_dtype
  logits = _forward(net, variables, steps)
  chex.assert_shape(logits, (2, 4, NUM_ACTIONS))
  assert logits.dtype == jnp.float32
  chex.assert_tree_all_finite(logits)


@pytest.mark.parametrize('layout', ['step', 'triple'])
def test_logits_at_step_t_depend_on_steps_up_to_t_only(layout):
  config = dataclasses.replace(TINY, obs_encoder='dense', layout=layout)
  net, variables = _init(config, (3,), jnp.float32)
  steps, _ = _steps(config, batch=1, length=6, obs_shape=(3,))

  def logits_of(obs, prev_reward):
    s = steps.replace(obs=obs, prev_reward=prev_reward)
    return net.apply(variables, s, deterministic=True)[0, :, 0]

  jac_obs, jac_reward = jax.jit(jax.jacrev(logits_of, argnums=(0, 1)))(
    steps.obs, steps.prev_reward
  )
  # [t, s]: how much logit t moves with step s's input.
  for influence_LxL in (
    jnp.abs(jac_obs[:, 0]).sum(-1),
    jnp.abs(jac_reward[:, 0]),
  ):
    future = np.triu(np.ones((6, 6), bool), k=1)
    assert np.all(influence_LxL[future] == 0.0)
    assert np.all(influence_LxL[~future] > 0.0)


def _decode_all(net, variables, config, steps):
  """Logits [B, T, A] of decoding steps [B, T] one at a time."""
  decode = jax.jit(
    lambda cache, step: net.apply(
      variables, step, cache, method=model.Transformer.decode
    )
  )
  cache = model.init_cache(config, steps.prev_action.shape[0])
  logits = []
  for t in range(steps.prev_action.shape[1]):
    step = jax.tree.map(lambda x, t=t: x[:, t], steps)
    logits_BxA, cache = decode(cache, step)
    logits.append(logits_BxA)
  return jnp.stack(logits, axis=1)


def _window_logits(net, variables, config, steps):
  """Logits [B, T, A] of a full pass over steps max(0, t - L + 1)..t."""
  length, total = config.context_steps, steps.prev_action.shape[1]
  head = _forward(net, variables, jax.tree.map(lambda x: x[:, :length], steps))
  # Each later window is its own batch row; its last step is step t.
  windows = jax.tree.map(
    lambda x: jnp.stack(
      [x[:, t - length + 1 : t + 1] for t in range(length, total)], axis=1
    ).reshape((-1, length) + x.shape[2:]),
    steps,
  )
  tail = _forward(net, variables, windows)[:, -1]
  tail = tail.reshape(head.shape[0], total - length, -1)
  return jnp.concatenate([head, tail], axis=1)


@pytest.mark.parametrize(
  'layout, norm, num_layers',
  [
    ('step', 'pre', 2),
    # Slow: the two-layer triple layout adds little to the other three.
    pytest.param('triple', 'post', 2, marks=pytest.mark.slow),
    ('step', 'pre', 1),
    ('triple', 'pre', 1),
  ],
)
def test_cached_decoding_equals_recompute_before_and_after_the_ring_wraps(
  layout, norm, num_layers
):
  """Decode == the sliding-window forward pass over the whole trajectory.

  Over the first context_steps steps that is also the forward pass over all
  steps so far. After the ring wraps it is the forward pass over the last
  context_steps steps only for one layer: deeper layers' cached keys were
  computed in their own step's window and carry older steps.
  """
  config = dataclasses.replace(
    TINY, layout=layout, norm=norm, num_layers=num_layers
  )
  net, variables = _init(config)
  total = int(2.5 * config.context_steps)
  steps, _ = _steps(config, batch=2, length=total, seed=1)
  decoded = _decode_all(net, variables, config, steps)
  close = lambda a, b: chex.assert_trees_all_close(a, b, atol=1e-5, rtol=1e-5)
  close(decoded, _forward(net, variables, steps))
  window = _window_logits(net, variables, config, steps)
  length = config.context_steps
  close(decoded[:, :length], window[:, :length])
  if num_layers == 1:
    close(decoded, window)
  else:
    assert not np.allclose(decoded[:, length:], window[:, length:], atol=1e-3)


def test_decode_compiles_once_over_many_steps():
  net, variables = _init(TINY)

  @jax.jit
  @chex.assert_max_traces(n=1)
  def decode(cache, step):
    return net.apply(variables, step, cache, method=model.Transformer.decode)

  steps, _ = _steps(TINY, batch=2, length=8)
  cache = model.init_cache(TINY, 2)
  for t in range(8):
    logits, cache = decode(cache, jax.tree.map(lambda x, t=t: x[:, t], steps))
  chex.assert_shape(logits, (2, NUM_ACTIONS))
  assert int(cache.step) == 8


def _reference_attention(q, k, v, mask):
  """Softmax attention spelled out in float64 numpy."""
  q, k, v = (np.asarray(x, np.float64) for x in (q, k, v))
  logits = np.einsum('bqmk,bsmk->bmqs', q, k) / np.sqrt(q.shape[-1])
  logits = np.where(mask, logits, -np.inf)
  weights = np.exp(logits - logits.max(-1, keepdims=True))
  weights /= weights.sum(-1, keepdims=True)
  return np.einsum('bmqs,bsmk->bqmk', weights, v)


def test_attention_paths_agree_with_a_plain_softmax_reference():
  """Default, 'xla' and the explicit (attention dropout) path agree.

  implementation='cudnn' needs an NVIDIA GPU and cannot run on CPU; it is
  covered by the same call signature only.
  """
  q, k, v = jax.random.normal(jax.random.key(0), (3, 2, 9, 2, 4))
  config = dataclasses.replace(TINY, context_steps=2, layout='triple')
  pos = jnp.arange(9)
  masks = {
    'causal': np.tril(np.ones((9, 9), bool)),
    # 9 tokens = 3 steps, more than context_steps=2: a sliding window.
    'window': np.asarray(attention.visible(pos, pos, config)),
  }
  assert not masks['window'][8, 2] and masks['window'][8, 3]
  layer = attention.Attention(config)
  for name, mask in masks.items():
    expected = _reference_attention(q, k, v, mask)
    outputs = {
      impl: jax.nn.dot_product_attention(
        q, k, v, mask=jnp.asarray(mask)[None, None], implementation=impl
      )
      for impl in (None, 'xla')
    }
    outputs['explicit'] = layer.apply(
      {},
      q,
      k,
      v,
      jnp.asarray(mask),
      method=attention.Attention._explicit_attention,
    )
    for impl, out in outputs.items():
      np.testing.assert_allclose(
        out, expected, atol=1e-5, err_msg=f'{impl} with {name} mask'
      )
  # is_causal=True, what the training forward pass uses.
  for impl in (None, 'xla'):
    causal = jax.nn.dot_product_attention(
      q, k, v, is_causal=True, implementation=impl
    )
    np.testing.assert_allclose(
      causal, _reference_attention(q, k, v, masks['causal']), atol=1e-5
    )


def test_model_logits_do_not_depend_on_the_attention_implementation():
  steps, _ = _steps(TINY, batch=2, length=6)
  logits = {}
  for impl in (None, 'xla'):
    config = dataclasses.replace(TINY, attention_impl=impl)
    net, variables = _init(config)
    logits[impl] = _forward(net, variables, steps)
  chex.assert_trees_all_close(logits[None], logits['xla'], atol=1e-6)


def test_bfloat16_compute_gives_finite_float32_logits_close_to_float32():
  net32, variables = _init(TINY)
  net16 = model.Transformer(dataclasses.replace(TINY, dtype='bfloat16'))
  steps, _ = _steps(TINY, batch=2, length=6)
  logits32 = net32.apply(variables, steps, deterministic=True)
  logits16 = net16.apply(variables, steps, deterministic=True)
  assert logits16.dtype == jnp.float32
  chex.assert_tree_all_finite(logits16)
  chex.assert_trees_all_close(logits16, logits32, atol=0.1, rtol=0.05)
  assert not np.array_equal(logits16, logits32)  # bfloat16 did compute
  cache = model.init_cache(net16.config, 2)
  assert cache.keys[0].dtype == jnp.bfloat16


def test_dropout_is_random_in_training_and_off_when_deterministic():
  config = dataclasses.replace(TINY, dropout=0.2, attention_dropout=0.2)
  net, variables = _init(config)
  steps, _ = _steps(config, batch=2, length=6)
  train = jax.jit(
    lambda seed: net.apply(
      variables,
      steps,
      deterministic=False,
      rngs={'dropout': jax.random.key(seed)},
    )
  )
  assert not np.allclose(train(0), train(1))
  chex.assert_trees_all_equal(train(0), train(0))
  chex.assert_trees_all_equal(
    _forward(net, variables, steps),
    _forward(net, variables, steps),
  )


@pytest.mark.parametrize(
  'field, value',
  [
    ('d_model', 18),  # not divisible by num_heads=4
    ('layout', 'quad'),
    ('obs_encoder', 'lstm'),
    ('obs_vocab', 0),
    ('norm', 'mid'),
    ('dtype', 'int8'),
    ('attention_impl', 'flash'),
    ('dropout', 1.0),
    ('context_steps', 0),
  ],
)
def test_bad_config_fields_raise_an_error_naming_the_field(field, value):
  config = dataclasses.replace(TINY, num_heads=4, **{field: value})
  with pytest.raises(ValueError, match=field):
    config.validate()
  with pytest.raises(ValueError, match=field):
    _init(config)


def test_params_carry_logical_axis_names_and_only_params_exist():
  config = dataclasses.replace(TINY, obs_encoder='conv')
  net = model.Transformer(config)
  example = model.example_steps(config, (72, 96, 3), jnp.uint8)
  abstract = jax.eval_shape(
    lambda: net.init(jax.random.key(0), example, deterministic=True)
  )
  assert set(abstract) == {'params'}
  specs = nn.get_partition_spec(abstract)['params']
  attention_specs = specs['blocks_0']['attention']
  assert attention_specs['query']['kernel'] == P('embed', 'heads', 'kv')
  assert attention_specs['out']['kernel'] == P('heads', 'kv', 'embed')
  assert specs['blocks_1']['mlp']['up']['kernel'] == P('embed', 'mlp')
  assert specs['head']['kernel'] == P('embed', 'vocab')
  assert specs['embedder']['prev_action']['embedding'] == P('vocab', 'embed')
  conv = specs['embedder']['obs']['conv_0']['kernel']
  assert conv == P(None, None, 'conv_in', 'conv_out')
  # Every leaf is named, and only with names the sharding rules know.
  leaves = jax.tree.leaves(
    abstract, is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned)
  )
  assert all(isinstance(x, nn.LogicallyPartitioned) for x in leaves)
  names = {n for x in leaves for n in x.names if n is not None}
  assert names <= set(model.AXIS_NAMES)
  assert model.num_params(abstract) == model.num_params(nn.unbox(abstract))


def test_flops_per_token_follows_the_documented_formula():
  # 6 * layers * (4 D^2 + 2 D F) + 12 * layers * D * L + 6 * D * A.
  expected = 6 * 2 * (4 * 256 + 2 * 16 * 32) + 12 * 2 * 16 * 6 + 6 * 16 * 5
  assert model.flops_per_token(TINY) == expected
  triple = dataclasses.replace(TINY, layout='triple')
  assert model.flops_per_token(triple) == (
    6 * 2 * (4 * 256 + 2 * 16 * 32) + 12 * 2 * 16 * 18 + 6 * 16 * 5 / 3
  )
  conv = dataclasses.replace(TINY, obs_encoder='conv')
  assert model.flops_per_token(conv, (72, 96, 3)) > 6 * 72 * 96 * 3 * 16


@pytest.mark.slow  # learning check
def test_memorises_a_tiny_dataset():
  """4 random sequences of 16 steps, learnt to > 95% in 200 Adam steps."""
  config = dataclasses.replace(TINY, context_steps=16)
  steps, target = _steps(config, batch=4, length=16, seed=3)
  net, variables = _init(config)
  params = nn.unbox(variables)['params']
  tx = optax.adam(1e-2)

  def loss_fn(params):
    logits = net.apply({'params': params}, steps, deterministic=True)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, target)
    return loss.mean(), (logits.argmax(-1) == target).mean()

  @jax.jit
  def train_step(params, opt_state):
    grads, accuracy = jax.grad(loss_fn, has_aux=True)(params)
    updates, opt_state = tx.update(grads, opt_state)
    return optax.apply_updates(params, updates), opt_state, accuracy

  opt_state = tx.init(params)
  for _ in range(200):
    params, opt_state, _ = train_step(params, opt_state)
  _, accuracy = loss_fn(params)
  assert accuracy > 0.95
