"""Transitions -> model inputs: alignment, shifts, batching, dtypes."""

import chex
import jax
import jax.numpy as jnp
import numpy as np

from algdist import sequence
from algdist.agents import base

NUM_ACTIONS = 5


def _history(shape=(7,), obs_shape=(2,), seed=0):
  """A random history [*shape] with an episode boundary every 3 steps."""
  rng = np.random.default_rng(seed)
  steps = shape[-1]
  start = np.zeros(shape, bool)
  start[..., ::3] = True
  return base.History(
    obs=rng.integers(0, 9, shape + obs_shape).astype(np.int32),
    action=rng.integers(0, NUM_ACTIONS, shape).astype(np.int32),
    reward=rng.normal(size=shape).astype(np.float32),
    episode_start=np.broadcast_to(start, shape[:-1] + (steps,)).copy(),
  )


def test_targets_are_the_actions_taken_at_each_step():
  history = _history()
  steps, target = sequence.model_inputs(history, NUM_ACTIONS)
  np.testing.assert_array_equal(target, history.action)
  np.testing.assert_array_equal(steps.obs, history.obs)
  np.testing.assert_array_equal(steps.episode_start, history.episode_start)


def test_previous_action_and_reward_are_shifted_with_none_at_the_start():
  history = _history()
  steps, _ = sequence.model_inputs(history, NUM_ACTIONS)
  assert steps.prev_action[0] == sequence.no_action(NUM_ACTIONS)
  assert sequence.no_action(NUM_ACTIONS) == NUM_ACTIONS
  assert steps.prev_reward[0] == 0.0
  np.testing.assert_array_equal(steps.prev_action[1:], history.action[:-1])
  np.testing.assert_array_equal(steps.prev_reward[1:], history.reward[:-1])


def test_shift_crosses_episode_boundaries():
  history = _history()
  steps, _ = sequence.model_inputs(history, NUM_ACTIONS)
  # Step 3 starts the second episode; it still sees the first one's last step.
  assert steps.episode_start[3]
  assert steps.prev_action[3] == history.action[2]
  assert steps.prev_reward[3] == history.reward[2]
  assert steps.prev_action[3] != sequence.no_action(NUM_ACTIONS)


def test_each_stream_of_a_batch_is_shifted_on_its_own():
  history = _history(shape=(3, 2, 7), obs_shape=(4, 4, 3))
  steps, target = sequence.model_inputs(history, NUM_ACTIONS)
  chex.assert_shape(steps.obs, (3, 2, 7, 4, 4, 3))
  chex.assert_shape([steps.prev_action, steps.prev_reward, target], (3, 2, 7))
  for i in range(3):
    for j in range(2):
      one = jax.tree.map(lambda x, i=i, j=j: x[i, j], history)
      steps_ij, target_ij = sequence.model_inputs(one, NUM_ACTIONS)
      chex.assert_trees_all_equal(
        steps_ij, jax.tree.map(lambda x, i=i, j=j: x[i, j], steps)
      )
      np.testing.assert_array_equal(target_ij, target[i, j])


def test_numpy_stays_numpy_and_jit_gives_the_same_inputs():
  history = _history(shape=(4, 7))
  steps_np, target_np = sequence.model_inputs(history, NUM_ACTIONS)
  assert all(isinstance(x, np.ndarray) for x in jax.tree.leaves(steps_np))
  as_jax = jax.tree.map(jnp.asarray, history)
  steps_jit, target_jit = jax.jit(sequence.model_inputs, static_argnums=1)(
    as_jax, NUM_ACTIONS
  )
  assert all(isinstance(x, jax.Array) for x in jax.tree.leaves(steps_jit))
  chex.assert_trees_all_equal(steps_jit, steps_np)
  np.testing.assert_array_equal(target_jit, target_np)
  chex.assert_trees_all_equal_dtypes(steps_jit, steps_np)


def test_make_step_casts_to_the_token_dtypes_and_keeps_pixels_uint8():
  pixels = np.zeros((2, 72, 96, 3), np.uint8)
  step = sequence.make_step(
    pixels,
    np.array([1, 5], np.int64),
    np.array([0, 1], np.int64),
    np.array([1, 0], np.int32),
  )
  assert step.obs.dtype == np.uint8
  assert step.prev_action.dtype == np.int32
  assert step.prev_reward.dtype == np.float32
  assert step.episode_start.dtype == bool
  np.testing.assert_array_equal(step.episode_start, [True, False])
  traced = jax.jit(sequence.make_step)(
    jnp.asarray(pixels), jnp.array([1, 5]), jnp.array([0.0, 1.0]), True
  )
  chex.assert_trees_all_equal_dtypes(traced, step)
  chex.assert_shape(traced.episode_start, ())
