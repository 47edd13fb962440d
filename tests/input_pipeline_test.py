"""Windows of learning histories: alignment, boundaries, splits, loaders."""

import chex
import jax
import numpy as np
import pytest

from algdist import histories, input_pipeline, sequence
from algdist.agents import base

H, T, L, A = 6, 50, 12, 5
EPISODE = 7  # steps per episode in the synthetic histories


def _synthetic():
  """History h, step t observes (h, t); actions and rewards encode t too."""
  h_HxT, t_HxT = np.meshgrid(np.arange(H), np.arange(T), indexing='ij')
  history = base.History(
    obs=np.stack([h_HxT, t_HxT], -1).astype(np.int32),
    action=(t_HxT % A).astype(np.int32),
    reward=(t_HxT / 100).astype(np.float32),
    episode_start=(t_HxT % EPISODE == 0),
  )
  length = np.full((H,), T, np.int32)
  length[1] = 30  # a history cut short (e.g. subsampled): no window past it
  task = np.array([0, 0, 1, 1, 2, 2], np.int32)
  manifest = {'spec': {'split': 'train'}, 'num_tasks': 3}
  return histories.Dataset('synthetic', manifest, history, length, task)


def _select(**kw):
  dataset = _synthetic()
  args = dict(window_steps=L, validation_tasks=0.0, expert_episodes=0, seed=0)
  args.update(kw)
  selection = input_pipeline.select_histories(dataset, **args)
  return dataset.history, selection


def _check_window(steps, target, selection, rows):
  """One window: a single history, consecutive steps, inputs aligned."""
  h = np.unique(steps.obs[:, 0])
  assert len(h) == 1, 'a window mixes histories'
  h = int(h[0])
  assert h in rows
  t = steps.obs[:, 1]
  np.testing.assert_array_equal(np.diff(t), 1)
  assert selection.first_step[h] <= t[0]
  assert t[-1] < selection.length[h]
  np.testing.assert_array_equal(target, t % A)
  expected_prev = np.where(t == 0, sequence.no_action(A), (t - 1) % A)
  np.testing.assert_array_equal(steps.prev_action, expected_prev)
  np.testing.assert_allclose(
    steps.prev_reward, np.where(t == 0, 0, (t - 1) / 100), atol=1e-6
  )
  np.testing.assert_array_equal(steps.episode_start, t % EPISODE == 0)


def test_device_windows_are_aligned_and_never_mix_histories():
  history, selection = _select()
  data = input_pipeline.device_data(history, selection.train, selection, A, L)
  sample = jax.jit(lambda key: input_pipeline.sample_windows(key, data, 256, L))
  steps, target = jax.device_get(sample(jax.random.key(0)))
  chex.assert_shape(target, (256, L))
  chex.assert_shape(steps.obs, (256, L, 2))
  crossed = 0
  for i in range(256):
    window = jax.tree.map(lambda x, i=i: x[i], steps)
    _check_window(window, target[i], selection, selection.train)
    crossed += window.episode_start[1:].any()
  # Windows of 12 steps over 7-step episodes cross boundaries most times.
  assert crossed > 200
  # Every start is reachable: the first and last possible starts show up.
  starts = steps.obs[:, 0, 1]
  assert starts.min() == 0 and starts.max() == T - L


def test_validation_tasks_are_held_out_of_training():
  _, selection = _select(validation_tasks=0.34)
  task = _synthetic().task_index
  train_tasks = set(task[selection.train])
  val_tasks = set(task[selection.validation])
  assert len(val_tasks) == 1 and not train_tasks & val_tasks
  assert len(selection.train) + len(selection.validation) == H


def test_expert_distillation_windows_stay_in_the_last_episodes():
  history, selection = _select(expert_episodes=3)
  # Last 3 episode starts: full histories (T=50) begin episodes at 0, 7, ...,
  # 49, so the third-last starts at 35; the short one (30 steps) at 14.
  assert selection.first_step[0] == 35 and selection.first_step[1] == 14
  data = input_pipeline.device_data(history, selection.train, selection, A, L)
  steps, _ = input_pipeline.sample_windows(jax.random.key(1), data, 128, L)
  first = np.asarray(selection.first_step)[np.asarray(steps.obs[:, 0, 0])]
  assert (np.asarray(steps.obs[:, 0, 1]) >= first).all()


def test_too_short_histories_and_test_split_are_refused():
  with pytest.raises(ValueError, match='window_steps=40'):
    _select(window_steps=40)
  with pytest.raises(ValueError, match='expert_episodes=9'):
    _select(expert_episodes=9)
  dataset = _synthetic()
  dataset.manifest['spec']['split'] = 'test'
  with pytest.raises(ValueError, match='training tasks'):
    input_pipeline.select_histories(
      dataset,
      window_steps=L,
      validation_tasks=0,
      expert_episodes=0,
      seed=0,
    )


def test_streamed_windows_follow_the_same_rule_and_resume_exactly():
  history, selection = _select()
  source = input_pipeline.WindowSource(
    history, selection.train, selection, A, L, seed=3
  )
  stream = input_pipeline.stream_windows(
    source, global_batch=8, start_step=0, num_threads=2
  )
  batches = [next(stream) for _ in range(4)]
  for steps, target in batches:
    chex.assert_shape(target, (8, L))
    for i in range(8):
      window = jax.tree.map(lambda x, i=i: x[i], steps)
      _check_window(window, target[i], selection, selection.train)
  # Starting at step 2 gives the batches the uninterrupted stream gave there.
  resumed = input_pipeline.stream_windows(
    source, global_batch=8, start_step=2, num_threads=2
  )
  chex.assert_trees_all_equal(next(resumed), batches[2])
  # Each process reads the rows its devices hold, as the layout says.
  full = jax.make_array_from_process_local_data(
    _layout((8,), ('data',)), batches[1][1], (8, L)
  )
  np.testing.assert_array_equal(np.asarray(full), batches[1][1])
  flat, grid = _layout((8,), ('data',)), _layout((4, 2), ('data', 'replica'))
  for layout, processes, expected in [
    # A 1-D data mesh: processes of 4 devices hold halves of the batch.
    (flat, flat.mesh.devices.reshape(2, 4), [range(0, 4), range(4, 8)]),
    # An axis across processes that replicates the batch: both hold all
    # of it (a per-process slice rule would hand each half the batch).
    (grid, grid.mesh.devices.T, [range(8), range(8)]),
  ]:
    for held, rows in zip(processes, expected, strict=True):
      got = input_pipeline.process_rows(layout, 8, devices=list(held))
      np.testing.assert_array_equal(got, np.array(rows))
      part = next(
        input_pipeline.stream_windows(
          source, global_batch=8, start_step=1, rows=got, num_threads=1
        )
      )
      chex.assert_trees_all_equal(
        part, jax.tree.map(lambda x, r=got: x[r], batches[1])
      )


def _layout(shape, axes):
  """The batch axis split over 'data' of a mesh of the 8 test devices."""
  mesh = jax.sharding.Mesh(np.array(jax.devices()).reshape(shape), axes)
  spec = jax.sharding.PartitionSpec('data')
  return jax.sharding.NamedSharding(mesh, spec)


@pytest.mark.parametrize('expert_episodes', [0, 3])
def test_first_window_prob_starts_that_share_of_windows_at_the_first_step(
  expert_episodes,
):
  history, selection = _select(expert_episodes=expert_episodes)
  first = np.asarray(selection.first_step)
  data = input_pipeline.device_data(history, selection.train, selection, A, L)
  source = input_pipeline.WindowSource(
    history, selection.train, selection, A, L, seed=0, first_window_prob=0.5
  )
  device = [
    jax.device_get(input_pipeline.sample_windows(key, data, 512, L, p)[0])
    for key, p in ((jax.random.key(0), 0.5), (jax.random.key(0), 0.0))
  ]
  streamed = jax.tree.map(
    lambda *xs: np.stack(xs), *[source[g][0] for g in range(512)]
  )
  starts = np.asarray(selection.length) - L - first + 1  # per history
  for steps, p in ((device[0], 0.5), (streamed, 0.5), (device[1], 0.0)):
    h = steps.obs[:, 0, 0]
    at_first = steps.obs[:, 0, 1] == first[h]
    # p, plus a uniform start's chance of landing there anyway.
    expected = np.mean(p + (1 - p) / starts[h])
    assert abs(at_first.mean() - expected) < 0.07, (at_first.mean(), expected)
    for i in range(0, 512, 64):
      window = jax.tree.map(lambda x, i=i: x[i], steps)
      _check_window(window, window.obs[:, 1] % A, selection, selection.train)
