"""The coverage learner: sweeps unvisited cells, then exploits the goal."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from algdist import agents, envs, rollout, sequence
from algdist.agents import coverage


def _complete_episode_returns(history, i):
  """Returns of learner i's complete episodes (the last may be cut off)."""
  stream = jax.tree.map(lambda x: x[i, 0], history)
  num = int(np.asarray(stream.episode_start).sum())
  return np.asarray(rollout.stream_episode_returns(stream, num))[:-1]


def _histories(name, num_steps, num_tasks=None, **settings):
  env, params = envs.make(name)
  config, make_train = agents.get('coverage', num_steps=num_steps, **settings)
  chex.clear_trace_counter()  # each call builds a new learner to count
  learn = chex.assert_max_traces(make_train(config, env), n=1)
  train = jax.jit(jax.vmap(learn))
  tasks = env.tasks(params, 'train', num=num_tasks)
  num = jax.tree.leaves(tasks)[0].shape[0]
  keys = jax.random.split(jax.random.key(0), num)
  memory, history = train(keys, tasks)
  return env, tasks, memory, history


@pytest.mark.slow  # learning check
def test_finds_every_hard_goal_then_reaches_it_every_episode():
  env, tasks, memory, history = _histories('dark_room_hard', 600)
  np.testing.assert_array_equal(memory.known, True)
  np.testing.assert_array_equal(memory.target[:, 0, 0], tasks.goal)
  first_found = []
  for i in range(tasks.goal.shape[0]):
    returns = _complete_episode_returns(history, i)
    found = int(np.argmax(returns))
    first_found.append(found)
    assert returns[found] == 1.0
    # Once found, every later episode reaches it on a shortest path.
    np.testing.assert_array_equal(returns[found:], 1.0)
  # A random walk finds a Hard goal in about 4% of episodes; the sweep
  # needs at most 18 episodes for any goal and about 8 on average.
  assert max(first_found) < 18, max(first_found)
  assert 4 < np.mean(first_found) < 10, np.mean(first_found)


def test_search_is_the_same_on_every_task_until_the_goal_pays():
  _, tasks, _, history = _histories('dark_room_hard', 200)
  obs = np.asarray(history.obs[:, 0])  # [N, T, 2]
  reward = np.asarray(history.reward[:, 0])
  paid = np.where(reward.any(-1), reward.argmax(-1), reward.shape[-1])
  far, near = np.argmax(paid), np.argmin(paid)
  t = paid[near]
  np.testing.assert_array_equal(obs[near, : t + 1], obs[far, : t + 1])


@pytest.mark.slow  # learning check
def test_dark_room_episodes_are_optimal_once_the_goal_is_found():
  env, tasks, _, history = _histories('dark_room', 400)
  optimal = np.asarray(env.optimal_return(tasks))
  for i in range(tasks.goal.shape[0]):
    returns = _complete_episode_returns(history, i)
    # 9x9 is covered within 6 episodes; from then on, the optimum.
    np.testing.assert_array_equal(returns[6:], optimal[i])


@pytest.mark.slow  # learning check
@pytest.mark.parametrize('order', coverage.ORDERS)
def test_key_to_door_finds_key_then_door_then_takes_both_every_episode(order):
  env, tasks, memory, history = _histories(
    'dark_key_to_door', 1500, num_tasks=64, order=order
  )
  chex.assert_shape(memory.visited, (tasks.key_pos.shape[0], 1, 2, 9, 9))
  np.testing.assert_array_equal(memory.known, True)
  np.testing.assert_array_equal(memory.target[:, 0, 0], tasks.key_pos)
  np.testing.assert_array_equal(memory.target[:, 0, 1], tasks.door_pos)
  both = []
  for i in range(tasks.key_pos.shape[0]):
    returns = _complete_episode_returns(history, i)
    first = int(np.argmax(returns == 2))
    both.append(first)
    # From the first episode that takes both, every episode does.
    np.testing.assert_array_equal(returns[first:], 2.0)
  # Each 50-step episode sweeps a good part of the 81 cells.
  assert max(both) <= 8, max(both)


def test_nearest_unvisited_breaks_ties_by_lowest_index():
  visited = jnp.zeros((5, 5), bool).at[2, 2].set(True)
  # (1, 2), (2, 1), (2, 3), (3, 2) are all at distance 1: (1, 2) is first.
  np.testing.assert_array_equal(
    coverage.nearest_unvisited(jnp.array([2, 2]), visited), [1, 2]
  )
  everything = jnp.ones((5, 5), bool)
  np.testing.assert_array_equal(
    coverage.nearest_unvisited(jnp.array([4, 0]), everything), [4, 0]
  )


def test_snake_order_walks_rows_alternating_direction():
  visited = jnp.zeros((4, 4), bool)
  order = []
  for _ in range(16):
    cell = coverage.first_unvisited_in_snake(jnp.array([0, 0]), visited)
    order.append(tuple(int(c) for c in cell))
    visited = visited.at[cell[0], cell[1]].set(True)
  # (x, y): row 0 left to right, then row 1 right to left, ...
  row0 = [(0, 0), (1, 0), (2, 0), (3, 0)]
  row1 = [(3, 1), (2, 1), (1, 1), (0, 1)]
  assert order[:8] == row0 + row1
  assert len(set(order)) == 16


def test_frames_are_the_eight_symmetries_of_the_grid():
  size = 5
  seen = set()
  for frame in range(8):
    fx, fy = (np.asarray(a) for a in coverage.framed_grid(size, frame))
    cells = {
      (int(u), int(v)) for u, v in zip(fx.ravel(), fy.ravel(), strict=True)
    }
    assert len(cells) == size * size  # a permutation of the cells
    centre = (fx[2, 2], fy[2, 2])
    assert centre == (2, 2)  # symmetries of the grid fix its centre
    seen.add((fx.tobytes(), fy.tobytes()))
  assert len(seen) == 8
  x, y = coverage._grid(size)
  fx, fy = coverage.framed_grid(size, 0)
  np.testing.assert_array_equal(fx, x)
  np.testing.assert_array_equal(fy, y)


@pytest.mark.slow  # learning check
def test_actors_in_other_frames_search_in_other_orders_and_all_find():
  env, tasks, memory, history = _histories(
    'dark_room_hard', 600, num_tasks=3, num_actors=8, frames=8
  )
  np.testing.assert_array_equal(memory.frame[0], np.arange(8))
  np.testing.assert_array_equal(memory.known, True)
  obs = np.asarray(history.obs[0])  # [8 actors, T, 2]
  # From the centre the four turns first head to the four walls.
  first_moves = {tuple(obs[a, 2] - obs[a, 1]) for a in range(8)}
  assert first_moves == {(-1, 0), (1, 0), (0, -1), (0, 1)}
  paths = {obs[a, :60].tobytes() for a in range(8)}
  assert len(paths) == 8
  # Frame 0 is the single-frame learner's search.
  _, _, _, one = _histories('dark_room_hard', 600, num_tasks=3)
  np.testing.assert_array_equal(history.obs[:, 0], one.obs[:, 0])


@pytest.mark.parametrize('name', ['dark_room', 'dark_room_hard'])
def test_retrace_replays_the_episode_that_first_paid(name):
  _, tasks, memory, history = _histories(
    name, 600, num_tasks=6, exploit='retrace'
  )
  np.testing.assert_array_equal(memory.known, True)
  action = np.asarray(history.action[:, 0])
  reward = np.asarray(history.reward[:, 0])
  start = np.asarray(history.episode_start[:, 0])
  for i in range(tasks.goal.shape[0]):
    starts = np.flatnonzero(start[i])
    episodes = np.split(np.arange(action.shape[1]), starts[1:])[:-1]
    # Each episode's steps up to and with its first paying one.
    to_pay = [e[: np.argmax(reward[i, e] > 0) + 1] for e in episodes]
    paid = [reward[i, e].any() for e in episodes]
    found = paid.index(True)
    route = action[i, to_pay[found]]
    for e, steps in zip(
      episodes[found + 1 :], to_pay[found + 1 :], strict=True
    ):
      assert reward[i, e].any()
      np.testing.assert_array_equal(action[i, steps], route)


def test_epsilon_one_acts_uniformly():
  _, _, _, history = _histories('dark_room', 100, epsilon=1.0)
  counts = np.bincount(np.asarray(history.action).ravel(), minlength=5)
  np.testing.assert_allclose(counts / counts.sum(), 0.2, atol=0.03)


def test_imitate_planned_labels_each_slip_with_the_planned_action():
  env, _, _, history = _histories(
    'dark_room_hard', 300, num_tasks=4, epsilon=0.2, imitate='planned'
  )
  action, target = np.asarray(history.action), np.asarray(history.target)
  slipped = action != target
  # About epsilon * 4/5 of steps take a random action other than the plan.
  assert 0.1 < slipped.mean() < 0.22, slipped.mean()
  steps, labels = sequence.model_inputs(history, env.num_actions)
  np.testing.assert_array_equal(labels, target)
  np.testing.assert_array_equal(steps.prev_action[..., 1:], action[..., :-1])
  # Without slips the planned action is the one taken; without the option
  # the history records no separate target.
  _, _, _, calm = _histories(
    'dark_room_hard', 100, num_tasks=4, imitate='planned'
  )
  np.testing.assert_array_equal(calm.target, calm.action)
  _, _, _, plain = _histories('dark_room_hard', 50, num_tasks=2, epsilon=0.2)
  assert plain.target is None


@pytest.mark.parametrize(
  'env_name, settings, match',
  [
    ('adversarial_bandit', {}, 'Dark Room family'),
    ('dark_room', {'epsilon': 2.0}, 'epsilon=2.0'),
    ('dark_room', {'order': 'spiral'}, "order='spiral'"),
    ('dark_room', {'frames': 9}, 'frames=9'),
    ('dark_key_to_door', {'exploit': 'retrace'}, "exploit='retrace'"),
    ('dark_room', {'exploit': 'teleport'}, "exploit='teleport'"),
    ('dark_room', {'imitate': 'best'}, "imitate='best'"),
  ],
)
def test_refuses_a_non_grid_env_and_bad_settings(env_name, settings, match):
  env, _ = envs.make(env_name)
  config, make_train = agents.get('coverage', **settings)
  with pytest.raises(ValueError, match=match):
    make_train(config, env)
