"""Clip sampling: indices, masks for short videos, start ranges, selective frame decoding."""

import io

import numpy as np
import pytest
from PIL import Image

from echoprime_jax.data import clips


def test_full_clip_and_short_video_padding():
  idx, mask = clips.clip_indices(40, length=16, stride=2, start=3)
  np.testing.assert_array_equal(idx, 3 + 2 * np.arange(16))
  assert mask.all()
  idx, mask = clips.clip_indices(7, length=5, stride=2, start=0)  # frames 0, 2, 4, 6 exist
  np.testing.assert_array_equal(idx, [0, 2, 4, 6, -1])
  np.testing.assert_array_equal(mask, [True, True, True, True, False])
  with pytest.raises(ValueError):
    clips.clip_indices(0)
  with pytest.raises(ValueError):
    clips.clip_indices(5, start=5)


def test_random_start_keeps_the_clip_inside_the_video():
  rng = np.random.default_rng(0)
  starts = {clips.random_start(rng, 40, 16, 2) for _ in range(400)}
  assert starts == set(range(0, 40 - 30))  # last frame 9 + 30 = 39: every start is reachable
  assert {clips.random_start(rng, 10, 16, 2) for _ in range(20)} == {0}  # short: start 0


def _jpeg(value: int, channels: int) -> bytes:
  shape = (8, 8) if channels == 1 else (8, 8, 3)
  buf = io.BytesIO()
  Image.fromarray(np.full(shape, value, np.uint8)).save(buf, "PNG")
  return buf.getvalue()


def test_decode_frames_takes_only_the_selected_frames_and_pads_with_zeros():
  frames = [_jpeg(10 * i, 1) for i in range(5)]
  frames[1] = b"not an image"  # never decoded: not selected
  clip = clips.decode_frames(frames, np.array([0, 2, 4, -1]))
  assert clip.shape == (4, 8, 8, 3) and clip.dtype == np.uint8  # grey comes out as RGB
  assert [int(clip[t].max()) for t in range(4)] == [0, 20, 40, 0]
  assert (clip[..., 0] == clip[..., 2]).all()
  assert clips.decode_frames([], np.array([-1, -1]), size=6).shape == (2, 6, 6, 3)

def test_grey_and_colour_jpeg_frames_decode_to_rgb():
  grey = np.tile(np.arange(0, 256, 16, dtype=np.uint8), (16, 1))
  colour = np.zeros((16, 16, 3), np.uint8)
  colour[..., 0] = 200
  encoded = []
  for image in (grey, colour):
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, "JPEG", quality=95)
    encoded.append(buf.getvalue())
  clip = clips.decode_frames(encoded, np.array([0, 1]))
  assert clip.shape == (2, 16, 16, 3)
  assert (clip[0, ..., 0] == clip[0, ..., 1]).all() and (clip[0, ..., 1] == clip[0, ..., 2]).all()
  assert np.abs(clip[0, ..., 0].astype(int) - grey).max() <= 4
  assert abs(int(clip[1, ..., 0].mean()) - 200) <= 4 and clip[1, ..., 1].mean() < 8
