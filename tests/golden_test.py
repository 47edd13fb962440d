"""Golden numbers of one training step: the model, optimizer and loss.

A small Dark Room-like transformer takes one AdamW update on a fixed batch;
the loss, gradient norm and parameter checksums are pinned. A change that
was meant to leave training alone (a refactoring, a new JAX) must keep them.
Print the current numbers with:

  JAX_PLATFORMS=cpu python -m tests.golden_test
"""

import jax
import ml_collections
import numpy as np

from algdist import model, sequence, sharding, train
from algdist.agents import base

# 2 layers of width 32 on (x, y) observations of a 9x9 grid, as Dark Room's.
CONFIG = model.ModelConfig(
  num_actions=5,
  obs_encoder='embed',
  obs_vocab=9,
  context_steps=10,
  num_layers=2,
  num_heads=2,
  d_model=32,
  d_ff=64,
  dropout=0.1,  # so the step's dropout key is pinned too
)
BATCH = 4
SEED = 0

# Recorded on CPU, JAX 0.11.2; must hold within RTOL on JAX >= 0.10.
GOLDEN = {
  'loss': 1.7422465085983276,
  'grad_norm': 2.711796522140503,
  'param_sum': 158.30387844826555,
  'param_sum_squares': 661.0254512901341,
  'update_sum_abs': 182.0707040001107,
}
RTOL = 1e-5


def _optimizer_section():
  """Every field make_optimizer reads, spelled out, not a preset's values."""
  t = ml_collections.ConfigDict()
  t.num_steps = 100
  t.warmup_steps = 1
  # Step 0 runs at init_learning_rate: large, so the update shows.
  t.init_learning_rate = 1e-2
  t.learning_rate = 1e-2
  t.end_learning_rate = 1e-4
  t.weight_decay = 1e-4
  t.b1 = 0.9
  t.b2 = 0.99
  t.grad_clip = 1.0
  return t


def _batch():
  """Steps [BATCH, L] and targets of Dark Room-like random histories."""
  rng = np.random.default_rng(SEED)
  shape = (BATCH, CONFIG.context_steps)
  history = base.History(
    obs=rng.integers(0, CONFIG.obs_vocab, shape + (2,)).astype(np.int32),
    action=rng.integers(0, CONFIG.num_actions, shape).astype(np.int32),
    reward=(rng.random(shape) < 0.2).astype(np.float32),
    # 4-step episodes.
    episode_start=np.broadcast_to(np.arange(shape[1]) % 4 == 0, shape),
  )
  return sequence.model_inputs(history, CONFIG.num_actions)


def _checksums(params) -> dict:
  """float64 sums over every parameter, computed on the host."""
  leaves = [np.asarray(x, np.float64) for x in jax.tree.leaves(params)]
  return {
    'param_sum': sum(x.sum() for x in leaves),
    'param_sum_squares': sum((x * x).sum() for x in leaves),
  }


def one_step() -> dict:
  """Loss, gradient norm and parameter checksums of one update."""
  net = model.Transformer(CONFIG)
  optimizer, schedule = train.make_optimizer(_optimizer_section())
  inputs = model.example_steps(CONFIG, (2,), np.int32)
  # One device: the numbers must not depend on how many devices there are.
  mesh = sharding.make_mesh((1,), ('data',), jax.devices()[:1])
  rules = (('batch', 'data'), ('mlp', 'data'))
  with jax.set_mesh(mesh):
    init, abstract = train.state_layout(net, optimizer, inputs, mesh, rules)
    state = train.init_state(init, abstract, SEED)
    before = jax.device_get(state.params)
    step = jax.jit(train.make_train_step(net, optimizer, schedule))
    state, metrics = step(state, _batch())
  after = jax.device_get(state.params)
  update = jax.tree.map(
    lambda a, b: np.asarray(a, np.float64) - np.asarray(b, np.float64),
    after,
    before,
  )
  return {
    'loss': float(metrics['loss']),
    'grad_norm': float(metrics['grad_norm']),
    **_checksums(after),
    'update_sum_abs': sum(np.abs(x).sum() for x in jax.tree.leaves(update)),
  }


def test_one_training_step_matches_the_golden_numbers():
  got = one_step()
  for name, expected in GOLDEN.items():
    np.testing.assert_allclose(
      got[name],
      expected,
      rtol=RTOL,
      err_msg=(
        f'{name} of one training step moved. If you changed the model, '
        'optimizer or loss on purpose, update GOLDEN in tests/golden_test.py '
        'with what `JAX_PLATFORMS=cpu python -m tests.golden_test` prints '
        '(from the repository root); if not, the change altered training.'
      ),
    )


if __name__ == '__main__':
  for name, value in one_step().items():
    print(f'  {name!r}: {float(value)!r},')
