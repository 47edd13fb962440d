"""Watermaze: rendering, dynamics, task splits and validation."""

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from algdist.envs import watermaze as wm
from algdist.envs import watermaze_render as render

ENV = wm.Watermaze()
PARAMS = ENV.default_params
STEP = jax.jit(ENV.step)
TURN_LEFT = 4


def make_state(x, y, heading_deg, time=0):
  return wm.EnvState(
    pos=jnp.array([x, y], jnp.float32),
    heading=jnp.float32(math.radians(heading_deg)),
    time=jnp.int32(time),
  )


def with_platform(x, y):
  return PARAMS.replace(platform=jnp.array([x, y], jnp.float32))


def chroma(pixel):
  pixel = np.asarray(pixel, np.float64)
  return pixel / pixel.max()


def nearest_sector(pixel):
  palette = render.SECTOR_COLOURS / render.SECTOR_COLOURS.max(-1, keepdims=True)
  return int(np.argmin(np.abs(palette - chroma(pixel)).sum(-1)))


def is_wall(column):
  """(H,) bool: which pixels of an (H, 3) column are neither ceiling nor
  floor."""
  column = np.asarray(column)
  return ~(
    np.all(column == render.CEILING_COLOUR, -1)
    | np.all(column == render.FLOOR_COLOUR, -1)
  )


def test_reset_and_step_shapes_and_dtypes():
  obs, state = ENV.reset(jax.random.key(0), PARAMS)
  chex.assert_shape(obs, (72, 96, 3))
  chex.assert_type(obs, jnp.uint8)
  assert ENV.observation_space(PARAMS).contains(obs)
  chex.assert_shape(state.pos, (2,))
  chex.assert_type([state.pos, state.heading], jnp.float32)
  chex.assert_shape(state.heading, ())
  chex.assert_type(state.time, jnp.int32)
  obs, state2, reward, terminated, truncated, info = STEP(
    jax.random.key(1), state, 0, PARAMS
  )
  chex.assert_shape(obs, (72, 96, 3))
  chex.assert_type(obs, jnp.uint8)
  chex.assert_trees_all_equal_shapes_and_dtypes(state, state2)
  chex.assert_shape([reward, terminated, truncated], ())
  chex.assert_type(reward, jnp.float32)
  chex.assert_type([terminated, truncated], jnp.bool_)
  assert set(info) == {'terminated', 'truncated'}
  assert ENV.num_actions == 8 and ENV.action_space(PARAMS).n == 8


def test_step_traces_once_across_platforms():
  chex.clear_trace_counter()

  @jax.jit
  @chex.assert_max_traces(n=1)
  def step(key, state, action, params):
    return ENV.step(key, state, action, params)

  tasks = ENV.tasks(PARAMS, 'train', num=3, seed=0)
  state = make_state(0.0, 0.0, 0.0)
  for i in range(3):
    params = jax.tree.map(lambda x, i=i: x[i], tasks)
    step(jax.random.key(i), state, jnp.int32(i), params)


def test_vmap_over_tasks_equals_loop():
  n = 6
  tasks = ENV.tasks(PARAMS, 'train', num=n, seed=1)
  reset_keys = jax.random.split(jax.random.key(0), n)
  step_keys = jax.random.split(jax.random.key(1), n)
  actions = jnp.arange(n) % 8
  _, states = jax.vmap(ENV.reset)(reset_keys, tasks)
  batched = jax.vmap(ENV.step)(step_keys, states, actions, tasks)
  for i in range(n):
    params = jax.tree.map(lambda x, i=i: x[i], tasks)
    _, state = ENV.reset(reset_keys[i], params)
    single = STEP(step_keys[i], state, actions[i], params)
    chex.assert_trees_all_close(
      jax.tree.map(lambda x, i=i: x[i], batched), single, atol=1e-5
    )


@pytest.mark.parametrize('sector', [0, 3, 5])
def test_facing_a_sector_shows_its_colour(sector):
  heading = (sector + 0.5) * 360 / render.NUM_SECTORS
  obs = np.asarray(ENV.get_obs(make_state(0.0, 0.0, heading), PARAMS))
  centre = obs[36, 44:52]  # horizon row, centre columns
  assert is_wall(centre).all()
  assert [nearest_sector(p) for p in centre] == [sector] * len(centre)


def test_walking_toward_a_wall_makes_it_taller():
  state = make_state(0.0, 0.0, 100.0)
  far = np.asarray(ENV.get_obs(state, PARAMS))
  for i in range(6):
    _, state, *_ = STEP(jax.random.key(i), state, 0, with_platform(0.6, -0.6))
  assert float(jnp.linalg.norm(state.pos)) == pytest.approx(0.6, abs=1e-5)
  near = np.asarray(ENV.get_obs(state, PARAMS))
  rows_far = is_wall(far[:, 48]).sum()
  rows_near = is_wall(near[:, 48]).sum()
  assert rows_far > 10
  assert rows_near > 2 * rows_far


def test_platform_is_invisible():
  state = make_state(-0.3, 0.2, 40.0)
  a, b = with_platform(0.5, 0.1), with_platform(-0.4, -0.5)
  np.testing.assert_array_equal(ENV.get_obs(state, a), ENV.get_obs(state, b))
  # A turn never reaches the platform, so the step is the same too.
  out_a = STEP(jax.random.key(0), state, TURN_LEFT, a)
  out_b = STEP(jax.random.key(0), state, TURN_LEFT, b)
  np.testing.assert_array_equal(out_a[0], out_b[0])
  # The view differs between poses, so the check above can fail.
  assert not np.array_equal(ENV.get_obs(state, a), out_a[0])


def test_reaching_the_platform_pays_one_and_respawns():
  params = with_platform(0.3, 0.0)
  state = make_state(0.1, 0.0, 0.0, time=7)
  for seed in range(5):
    obs, new, reward, terminated, truncated, _ = STEP(
      jax.random.key(seed), state, 0, params
    )
    assert float(reward) == 1.0
    assert not terminated and not truncated
    assert int(new.time) == 8
    gap = float(jnp.linalg.norm(new.pos - params.platform))
    assert gap > params.platform_radius
    # Not where the move ended (0.2, 0), nor the old heading.
    assert float(jnp.linalg.norm(new.pos - jnp.array([0.2, 0.0]))) > 1e-3
    assert float(new.heading) != 0.0
    np.testing.assert_array_equal(obs, ENV.get_obs(new, params))
  # One step short of the platform pays nothing.
  _, new, reward, *_ = STEP(jax.random.key(0), state, 1, params)
  assert float(reward) == 0.0
  np.testing.assert_allclose(new.pos, [0.0, 0.0], atol=1e-6)


def test_truncated_after_fifty_steps_then_auto_reset():
  params = with_platform(0.6, 0.0)
  state = make_state(-0.5, 0.0, 0.0)
  for t in range(1, 51):
    obs, state, reward, terminated, truncated, info = STEP(
      jax.random.key(t), state, TURN_LEFT, params
    )
    assert float(reward) == 0.0 and not terminated
    assert bool(truncated) == (t == 50) == bool(info['truncated'])
    assert int(state.time) == t % 50
  # Auto-reset: a fresh pose, off the platform, rendered once reset.
  np.testing.assert_array_equal(obs, ENV.get_obs(state, params))
  assert float(jnp.linalg.norm(state.pos - jnp.array([-0.5, 0.0]))) > 1e-3
  gap = float(jnp.linalg.norm(state.pos - params.platform))
  assert gap > params.platform_radius


@pytest.mark.parametrize('platform', [(0.0, 0.0), (0.5, -0.3)])
def test_spawns_are_uniform_and_off_the_platform(platform):
  n = 4000
  params = with_platform(*platform).replace(platform_radius=0.4)
  _, state = jax.vmap(ENV.reset, in_axes=(0, None))(
    jax.random.split(jax.random.key(0), n), params
  )
  pos, heading = np.asarray(state.pos), np.asarray(state.heading)
  reach = params.arena_radius - params.body_radius
  gap = np.linalg.norm(pos - np.asarray(platform), axis=-1)
  assert gap.min() > params.platform_radius
  radius = np.linalg.norm(pos, axis=-1)
  assert radius.max() <= reach + 1e-6
  # Uniform over the arena minus the platform: compare the share of spawns
  # in each quadrant with its share of that area (Monte Carlo, 1e6 points).
  rng = np.random.default_rng(0)
  ref = rng.uniform(-reach, reach, (10**6, 2))
  ref = ref[np.linalg.norm(ref, axis=-1) <= reach]
  ref = ref[np.linalg.norm(ref - np.asarray(platform), axis=-1) > 0.4]
  for sx in (-1, 1):
    for sy in (-1, 1):
      got = np.mean((np.sign(pos) == (sx, sy)).all(-1))
      want = np.mean((np.sign(ref) == (sx, sy)).all(-1))
      assert got == pytest.approx(want, abs=0.03)
  got = np.mean(radius < reach / 2)
  want = np.mean(np.linalg.norm(ref, axis=-1) < reach / 2)
  assert got == pytest.approx(want, abs=0.03)
  counts = np.histogram(heading, bins=8, range=(-math.pi, math.pi))[0]
  assert counts.min() > 0.8 * n / 8


def test_agent_never_leaves_the_arena():
  n, steps = 64, 150
  tasks = ENV.tasks(PARAMS, 'train', num=n, seed=2)
  _, state = jax.vmap(ENV.reset)(jax.random.split(jax.random.key(0), n), tasks)

  @jax.jit
  def run(state, key):
    def body(state, key):
      k_act, k_env = jax.random.split(key)
      action = jax.random.randint(k_act, (n,), 0, 8)
      _, state, *_ = jax.vmap(ENV.step)(
        jax.random.split(k_env, n), state, action, tasks
      )
      return state, state.pos

    return jax.lax.scan(body, state, jax.random.split(key, steps))[1]

  pos = np.asarray(run(state, jax.random.key(1)))
  radius = np.linalg.norm(pos, axis=-1)
  reach = PARAMS.arena_radius - PARAMS.body_radius
  assert radius.max() <= reach + 1e-5
  assert radius.max() > reach - 1e-3  # random walks do hit the wall


def test_train_and_test_tasks_are_disjoint_and_seeded():
  train = ENV.tasks(PARAMS, 'train', num=200, seed=0).platform
  test = ENV.tasks(PARAMS, 'test', num=200, seed=0).platform
  chex.assert_shape([train, test], (200, 2))
  train_cells = set(wm.cell_index(train, PARAMS).tolist())
  test_cells = set(wm.cell_index(test, PARAMS).tolist())
  assert -1 not in train_cells | test_cells
  assert not train_cells & test_cells
  assert len(test_cells) == PARAMS.num_test_cells
  assert len(train_cells) == len(wm.task_cells(PARAMS)) - len(test_cells)
  ENV.validate(ENV.tasks(PARAMS, 'train', num=200, seed=0))
  again = ENV.tasks(PARAMS, 'train', num=200, seed=0).platform
  np.testing.assert_array_equal(train, again)
  other_seed = ENV.tasks(PARAMS, 'train', num=200, seed=1).platform
  assert not np.array_equal(train, other_seed)
  resplit = PARAMS.replace(split_seed=1)
  other_test = ENV.tasks(resplit, 'test', num=200, seed=0).platform
  assert set(wm.cell_index(other_test, resplit).tolist()) != test_cells
  with pytest.raises(ValueError, match='num'):
    ENV.tasks(PARAMS, 'train')


@pytest.mark.parametrize(
  'overrides, field',
  [
    ({'arena_radius': 0.0}, 'arena_radius'),
    ({'platform_radius': 0.0}, 'platform_radius'),
    ({'platform_radius': 0.6}, 'platform_radius'),
    ({'platform': jnp.array([0.9, 0.0])}, 'platform'),
    ({'platform': jnp.array([0.0, 0.0, 0.0])}, 'platform'),
    ({'body_radius': -0.1}, 'body_radius'),
    ({'step_size': 0.0}, 'step_size'),
    ({'turn_size': 0.0}, 'turn_size'),
    ({'wall_height': 0.0}, 'wall_height'),
    ({'max_steps_in_episode': 0}, 'max_steps_in_episode'),
    ({'image_height': 0}, 'image_height'),
    ({'image_width': 0}, 'image_width'),
    ({'fov': 0.0}, 'fov'),
    ({'fov': 180.0}, 'fov'),
    ({'cell_size': 0.0}, 'cell_size'),
    ({'num_test_cells': 0}, 'num_test_cells'),
    ({'num_test_cells': 1000}, 'num_test_cells'),
  ],
)
def test_validate_names_the_bad_field(overrides, field):
  ENV.validate(PARAMS)
  with pytest.raises(ValueError, match=f'^{field}='):
    ENV.validate(PARAMS.replace(**overrides))


def test_top_down_render():
  state = make_state(-0.3, 0.2, 40.0)
  a = render.render_top_down(state, with_platform(0.5, 0.1))
  b = render.render_top_down(state, with_platform(-0.4, -0.5))
  chex.assert_shape(a, (96, 96, 3))
  chex.assert_type(a, jnp.uint8)
  assert not np.array_equal(a, b)
  moved = render.render_top_down(
    make_state(0.3, -0.2, 40.0), with_platform(0.5, 0)
  )
  assert not np.array_equal(a, moved)
  chex.assert_shape(render.render_top_down(state, PARAMS, size=40), (40, 40, 3))


def test_save_example_frames(tmp_path):
  wm.save_example_frames(str(tmp_path))
  for name in ['watermaze_first_person.png', 'watermaze_top_down.png']:
    assert (tmp_path / name).stat().st_size > 0
