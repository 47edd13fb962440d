"""Pose-pretrained pixel encoder: it learns to localise, is computed once per
workdir, and a frozen one stays exactly as pretrained in AD and ED."""

import os
import shutil

import jax
import numpy as np
import pytest

from algdist import checkpoints, encoder, main, train
from configs import dark_room, dmlab_watermaze


def _search_smoke(**encoder_settings):
  config = dmlab_watermaze.get_config('search_smoke')
  config.model.encoder.update(encoder_settings)
  return config


def test_pretraining_learns_to_read_the_pose_from_a_frame():
  config = _search_smoke(pretrain_steps=300, learning_rate=3e-3)
  _, untrained = encoder.pretrain(_search_smoke(pretrain_steps=1), False)
  _, trained = encoder.pretrain(config, False)
  # Uniform positions in the unit disk are ~0.9 apart from a guess at the
  # centre; the pretrained encoder places the agent far closer.
  assert untrained['pose_error'] > 0.45
  assert trained['pose_error'] < 0.3


def test_settings_that_cannot_work_are_named():
  with pytest.raises(ValueError, match='freeze a random encoder'):
    encoder.check(_search_smoke(freeze=True, pretrain_steps=0))
  config = dark_room.get_config('smoke')
  config.model.encoder.pretrain_steps = 10
  with pytest.raises(ValueError, match='dark_room has no pose_views'):
    encoder.check(config)
  with pytest.raises(ValueError, match='batch_size=0'):
    encoder.check(_search_smoke(batch_size=0))


def test_a_frozen_encoder_is_pretrained_once_and_shared_by_ad_and_ed(
  tmp_path, monkeypatch
):
  config = dmlab_watermaze.get_config('search_smoke')  # frozen, pretrained
  calls = []
  pretrain = encoder.pretrain
  monkeypatch.setattr(
    encoder, 'pretrain', lambda *a: calls.append(1) or pretrain(*a)
  )
  workdir = str(tmp_path / 'run')
  main.run(config, workdir)
  assert calls == [1]  # AD pretrained it; ED read the file
  saved = encoder.encoder_params(config, workdir)
  assert calls == [1]
  for method in ('ad', 'ed'):
    _, params = checkpoints.restore_params(config, workdir, method)
    chex_equal = jax.tree.map(np.array_equal, params['embedder']['obs'], saved)
    assert all(jax.tree.leaves(chex_equal)), method
  # The rest of the model trained.
  _, ad = checkpoints.restore_params(config, workdir, 'ad')
  _, ed = checkpoints.restore_params(config, workdir, 'ed')
  assert not np.array_equal(ad['head']['kernel'], ed['head']['kernel'])
  assert os.path.exists(os.path.join(workdir, 'eval', 'ad_test.gif'))
  # Other pretraining settings make another encoder (and another model:
  # the checkpoints of this one are refused by their provenance).
  other = _search_smoke(pretrain_steps=21, freeze=True)
  encoder.encoder_params(other, str(tmp_path / 'other'))
  assert calls == [1, 1]


def test_cached_embeddings_train_the_model_the_frames_train(tmp_path):
  # The frozen encoder run once per frame before training gives the updates
  # the inputs it would compute in each: the same losses and parameters.
  frames = _search_smoke()
  frames.train.update(num_steps=6, log_every=3, eval_every=3)
  frames.data.validation_tasks = 0.5
  cached = _search_smoke(cache_embeddings=True)
  cached.train.update(frames.train.to_dict())
  cached.data.validation_tasks = 0.5
  workdirs = [str(tmp_path / name) for name in ('frames', 'cached')]
  main.run(frames, workdirs[0], 'generate')
  shutil.copytree(workdirs[0], workdirs[1])
  results = [
    train.train_and_evaluate(c, w, 'ad', progress=False)
    for c, w in zip((frames, cached), workdirs, strict=True)
  ]
  for key in ('loss', 'val_loss', 'val_accuracy'):
    np.testing.assert_allclose(results[0][key], results[1][key], rtol=1e-5)
  params = [checkpoints.restore_params(frames, w, 'ad')[1] for w in workdirs]
  jax.tree.map(
    lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
    *params,
  )
  with pytest.raises(ValueError, match='cache_embeddings=True needs freeze'):
    encoder.check(_search_smoke(cache_embeddings=True, freeze=False))
