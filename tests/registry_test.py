"""`algdist.envs.make`: every name, gymnax's envs, and the errors."""

import jax
import jax.numpy as jnp
import pytest

from algdist import envs

ALL = [
  'adversarial_bandit',
  'dark_room',
  'dark_room_hard',
  'dark_key_to_door',
  'watermaze',
]


def test_names_are_the_five_families():
  assert envs.names() == sorted(ALL)


@pytest.mark.parametrize(
  'name',
  ALL + ['gymnax:MetaMaze-misc', 'gymnax:CartPole-v1', 'gymnax:FourRooms-misc'],
)
def test_make_builds_an_env_that_steps(name):
  env, params = envs.make(name)
  obs, state = env.reset(jax.random.key(0), params)
  action = env.action_space(params).sample(jax.random.key(1))
  out = jax.jit(env.step)(jax.random.key(2), state, action, params)
  assert len(out) == 6
  assert jax.tree.structure(out[0]) == jax.tree.structure(obs)


def test_unknown_name_lists_the_known_ones():
  with pytest.raises(ValueError, match='dark_room.*watermaze'):
    envs.make('dark_rom')
  with pytest.raises(ValueError, match='MetaMaze-misc'):
    envs.make('gymnax:NoSuchEnv-v0')


def test_unknown_parameter_is_named():
  with pytest.raises(ValueError, match=r"\['gird_size'\].*size"):
    envs.make('dark_room', gird_size=5)


@pytest.mark.parametrize(
  'name, overrides, field',
  [
    ('dark_room', {'size': 1}, 'size'),
    ('dark_room', {'max_steps_in_episode': 0}, 'max_steps_in_episode'),
    ('dark_room', {'goal': jnp.array([9, 0])}, 'goal'),
    ('dark_room', {'num_test_tasks': 0}, 'num_test_tasks'),
    ('dark_room_hard', {'size': 0}, 'size'),
    ('dark_key_to_door', {'max_steps_in_episode': 0}, 'max_steps_in_episode'),
    ('dark_key_to_door', {'door_pos': jnp.array([0, 0])}, 'distinct'),
    ('dark_key_to_door', {'key_pos': jnp.array([-1, 0])}, 'key_pos'),
    ('adversarial_bandit', {'num_arms': 1}, 'num_arms'),
    ('adversarial_bandit', {'means': jnp.full((10,), 1.5)}, 'means'),
    ('adversarial_bandit', {'shift_prob': 2.0}, 'shift_prob'),
  ],
)
def test_impossible_parameters_are_named(name, overrides, field):
  with pytest.raises(ValueError, match=field):
    envs.make(name, **overrides)


def test_valid_overrides_apply():
  env, params = envs.make('dark_room', size=5, goal=jnp.array([4, 4]))
  assert params.size == 5
  _, state = env.reset(jax.random.key(0), params)
  assert state.pos.tolist() == [2, 2]
