"""Augmentation: host draws (deterministic per seed) and the device apply (exact pixel maps)."""

import jax
import numpy as np
import pytest

from echoprime_jax.data import augment


def _clip(t=4, size=32):
  frame = np.zeros((size, size, 3), np.uint8)
  frame[8:24, 8:24] = 120
  frame[14:18, 20:24] = (250, 200, 150)
  return np.repeat(frame[None], t, axis=0)


def _apply(clip, params):
  """One clip through the jitted device apply (adds and drops the batch axis)."""
  fn = jax.jit(augment.apply)
  return np.asarray(fn(clip[None], *(np.asarray(params[k])[None] for k in augment.KEYS)))[0]


def test_same_generator_state_same_draw_and_every_frame_alike():
  config = augment.AugmentConfig(num_ops=3, magnitude=10, erase_prob=1.0)
  a = augment.draw_params(np.random.default_rng(5), config, 32, 32)
  b = augment.draw_params(np.random.default_rng(5), config, 32, 32)
  c = augment.draw_params(np.random.default_rng(6), config, 32, 32)
  for k in augment.KEYS:
    np.testing.assert_array_equal(a[k], b[k])
  assert any(not np.array_equal(a[k], c[k]) for k in augment.KEYS)
  assert a["aug_affine"].shape == (2, 3) and a["aug_affine"].dtype == np.float32
  assert a["aug_intensity"].shape == (3,) and a["aug_erase"].dtype == np.int32
  out = _apply(_clip(), a)
  assert all((out[t] == out[0]).all() for t in range(4))  # identical frames stay identical
  assert not np.array_equal(out, _clip())


def test_identity_parameters_change_nothing_and_padding_stays_zero():
  clip = _clip()
  np.testing.assert_array_equal(_apply(clip, augment.identity_params()), clip)
  none = augment.draw_params(np.random.default_rng(0), augment.AugmentConfig(num_ops=0,
                                                                             erase_prob=0.0),
                             32, 32)
  np.testing.assert_array_equal(_apply(clip, none), clip)
  clip[2:] = 0  # padded frames
  for seed in range(5):
    params = augment.draw_params(np.random.default_rng(seed),
                                 augment.AugmentConfig(num_ops=3, erase_prob=0.0), 32, 32)
    out = _apply(clip, params)
    assert out[2:].max() == 0 and out[:2].max() > 0


def test_translation_and_quarter_turn_move_pixels_exactly():
  h = w = 40
  clip = np.zeros((1, h, w, 3), np.uint8)
  clip[0, 18:22, 16:22] = 200
  clip[0, 18, 16] = 90  # a marker that shows orientation
  params = augment.identity_params()
  params["aug_affine"] = augment.affine_matrix({"translate_x": 0.25}, h, w)[:2]  # +10 px
  expected = np.zeros_like(clip)
  expected[0, 18:22, 26:32] = 200
  expected[0, 18, 26] = 90
  np.testing.assert_array_equal(_apply(clip, params), expected)
  # A quarter turn about the centre (19.5, 19.5) is a pixel permutation: (x, y) -> (39 - y, x).
  params["aug_affine"] = augment.affine_matrix({"rotate": 90.0}, h, w)[:2]
  ys, xs = np.nonzero(clip[0, ..., 0])
  expected = np.zeros_like(clip)
  expected[0, xs, 39 - ys] = clip[0, ys, xs]
  np.testing.assert_array_equal(_apply(clip, params), expected)


def test_intensity_table_keeps_black_is_monotonic_and_follows_the_formula():
  intensity = np.array([[np.exp(0.4), 1.3, 0.8]], np.float32)
  pivot = np.array([60.0], np.float32)
  lut = np.asarray(augment.intensity_lut(intensity, pivot))[0]
  assert lut[0] == 0 and (np.diff(lut.astype(int)) >= 0).all()
  x = np.arange(256.0)
  ref = np.clip(np.round((60 + (255 * (x / 255) ** np.exp(0.4) - 60) * 1.3) * 0.8), 0, 255)
  ref[0] = 0
  assert np.abs(lut.astype(int) - ref).max() <= 1  # float32 vs float64 at .5 ties
  assert (lut == ref).mean() > 0.98
  identity = np.asarray(augment.intensity_lut(np.ones((1, 3), np.float32), pivot))[0]
  np.testing.assert_array_equal(identity, np.arange(256))


def test_random_erasing_zeroes_one_rectangle_in_every_frame():
  clip = np.full((3, 32, 32, 3), 90, np.uint8)
  config = augment.AugmentConfig(num_ops=0, erase_prob=1.0, erase_area=(0.1, 0.1))
  params = augment.draw_params(np.random.default_rng(1), config, 32, 32)
  out = _apply(clip, params)
  zero = (out == 0).all(-1)
  assert (zero == zero[0]).all()  # the same box in every frame
  y0, x0, y1, x1 = params["aug_erase"]
  expected = np.zeros((32, 32), bool)
  expected[y0:y1, x0:x1] = True
  np.testing.assert_array_equal(zero[0], expected)
  assert 0.05 < zero[0].mean() < 0.15


def test_study_shaped_batches_are_augmented_per_video():
  videos = np.stack([_clip(), _clip()])[None]  # (B=1, V=2, T, H, W, 3)
  params = [augment.identity_params(),
            augment.draw_params(np.random.default_rng(3),
                                augment.AugmentConfig(num_ops=2, erase_prob=1.0), 32, 32)]
  batch = {"videos": videos, **{k: np.stack([p[k] for p in params])[None]
                                for k in augment.KEYS}}
  out = np.asarray(jax.jit(augment.batch_video, static_argnums=1)(batch, "videos"))
  np.testing.assert_array_equal(out[0, 0], videos[0, 0])
  np.testing.assert_array_equal(out[0, 1], _apply(videos[0, 1], params[1]))
  assert augment.batch_video({"video": videos}) is videos  # no parameters: passed through


def test_unknown_op_is_rejected():
  with pytest.raises(ValueError, match="unknown"):
    augment.AugmentConfig(ops=("rotate", "flip"))
