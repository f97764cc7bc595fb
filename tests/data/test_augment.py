"""Augmentation: one transform per clip, deterministic per seed, padding and black preserved."""

import numpy as np
import pytest

from echoprime_jax.data import augment


def _clip(t=4, size=32, channels=1):
  frame = np.zeros((size, size, channels), np.uint8)
  frame[8:24, 8:24] = 120
  frame[14:18, 20:24] = 250
  return np.repeat(frame[None], t, axis=0)


def test_same_generator_state_same_output_and_every_frame_alike():
  config = augment.AugmentConfig(num_ops=3, magnitude=10, erase_prob=1.0)
  a = augment.augment_clip(_clip(), np.random.default_rng(5), config)
  b = augment.augment_clip(_clip(), np.random.default_rng(5), config)
  np.testing.assert_array_equal(a, b)
  assert all((a[t] == a[0]).all() for t in range(4))  # identical frames stay identical
  c = augment.augment_clip(_clip(), np.random.default_rng(6), config)
  assert not np.array_equal(a, c)


def test_identity_config_changes_nothing_and_padding_stays_zero():
  clip = _clip()
  config = augment.AugmentConfig(num_ops=0, erase_prob=0.0)
  np.testing.assert_array_equal(augment.augment_clip(clip, np.random.default_rng(0), config), clip)
  mask = np.array([True, True, False, False])
  out = augment.augment_clip(clip, np.random.default_rng(0),
                             augment.AugmentConfig(num_ops=2, erase_prob=0.0), mask)
  assert out[2:].max() == 0 and out[:2].max() > 0


def test_translation_moves_the_content_by_the_drawn_amount():
  h = w = 40
  clip = np.zeros((1, h, w, 1), np.uint8)
  clip[0, 18:22, 18:22] = 200
  matrix = augment.affine_matrix({"translate_x": 0.25}, h, w)  # +10 px to the right
  params_out = np.linalg.inv(matrix) @ np.array([19.5, 19.5, 1.0])
  np.testing.assert_allclose(params_out[:2], [29.5, 19.5])
  rotated = augment.affine_matrix({"rotate": 90.0}, h, w)
  np.testing.assert_allclose((np.linalg.inv(rotated) @ [29.5, 19.5, 1])[:2], [19.5, 29.5],
                             atol=1e-9)  # a quarter turn about the centre


def test_intensity_lut_keeps_black_and_is_monotonic():
  lut = augment.intensity_lut({"gamma": 0.4, "contrast": 0.3, "brightness": -0.2}, pivot=60)
  assert lut[0] == 0 and (np.diff(lut.astype(int)) >= 0).all()
  assert augment.intensity_lut({"rotate": 3.0}, 60) is None


def test_random_erasing_zeroes_one_rectangle_in_every_frame():
  clip = np.full((3, 32, 32, 1), 90, np.uint8)
  config = augment.AugmentConfig(num_ops=0, erase_prob=1.0, erase_area=(0.1, 0.1))
  out = augment.augment_clip(clip, np.random.default_rng(1), config)
  zero = out[..., 0] == 0
  assert (zero == zero[0]).all()  # the same box in every frame
  ys, xs = np.nonzero(zero[0])
  assert zero[0].sum() == (np.ptp(ys) + 1) * (np.ptp(xs) + 1)  # a filled rectangle
  assert 0.05 < zero[0].mean() < 0.15


def test_unknown_op_is_rejected():
  with pytest.raises(ValueError, match="unknown"):
    augment.AugmentConfig(ops=("rotate", "flip"))
