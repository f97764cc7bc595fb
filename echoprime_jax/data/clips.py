"""Clip sampling: which frames of a video become the model's (T, H, W, 3) clip.

EchoPrime's reference takes `length` frames at `stride` starting at frame 0, zero-padding short
videos. Training draws the start uniformly from every start that keeps the whole clip inside
the video (so every frame can be seen); evaluation uses the reference's start 0. Padding
positions are marked in a frame mask so that losses and poolings can ignore them (the towers
see zeros there, as in the reference, which pads after normalisation: see `normalize.py`).

Only the selected frames are decoded: a 256-frame record costs 16 JPEG decodes, not 256.
NumPy/Pillow only.
"""

from __future__ import annotations

import io

import numpy as np
import simplejpeg
from PIL import Image


def clip_indices(num_frames: int, length: int = 16, stride: int = 2, start: int = 0
                 ) -> tuple[np.ndarray, np.ndarray]:
  """Frame indices and validity of a clip.

  Returns (indices (length,) int32, mask (length,) bool); padded positions have index -1 and
  mask False. Raises ValueError for an empty video or a bad start.
  """
  if num_frames < 1:
    raise ValueError("a clip needs a video with at least one frame")
  if not 0 <= start < num_frames:
    raise ValueError(f"start {start} outside a {num_frames}-frame video")
  idx = start + stride * np.arange(length)
  mask = idx < num_frames
  return np.where(mask, idx, -1).astype(np.int32), mask


def max_start(num_frames: int, length: int = 16, stride: int = 2) -> int:
  """The last start whose clip lies fully inside the video (0 for short videos)."""
  return max(0, num_frames - 1 - stride * (length - 1))


def random_start(rng: np.random.Generator, num_frames: int, length: int = 16,
                 stride: int = 2) -> int:
  """Uniform over the starts that keep the clip inside the video."""
  return int(rng.integers(0, max_start(num_frames, length, stride) + 1))


def decode_frames(frames: list[bytes], indices: np.ndarray, size: int | None = None
                  ) -> np.ndarray:
  """Encoded frames + clip indices -> (T, H, W, 3) uint8 RGB; index -1 gives zeros.

  Grey records come out as RGB too: libjpeg-turbo writes the three channels while decoding for
  ~5% more than grey alone, far cheaper than expanding a grey clip in NumPy afterwards (~3 ms
  for 16 frames at 224 px). `size` is needed only when every index is -1 (nothing to take the
  shape from).
  """
  wanted = sorted({int(i) for i in indices if i >= 0})
  first = decode_frame(frames[wanted[0]]) if wanted else None
  if first is not None:
    h, w = first.shape[:2]
  elif size is not None:
    h = w = size
  else:
    raise ValueError("an all-padding clip needs `size`")
  out = np.zeros((len(indices), h, w, 3), np.uint8)
  done: dict[int, int] = {}  # frame index -> the clip slot that already holds it
  for t, i in enumerate(int(i) for i in indices):
    if i < 0:
      continue
    if i in done:
      out[t] = out[done[i]]
    elif first is not None and i == wanted[0]:
      out[t] = first
    else:
      decode_frame(frames[i], out=out[t])
    done.setdefault(i, t)
  return out


def decode_frame(data: bytes, out: np.ndarray | None = None) -> np.ndarray:
  """One encoded frame -> (H, W, 3) uint8 RGB, written into `out` when given.

  JPEG goes through simplejpeg (libjpeg-turbo, decoding straight into the clip buffer); PNG
  (the lossless option) and anything else through Pillow.
  """
  if data[:2] == b"\xff\xd8":  # JPEG SOI marker
    return simplejpeg.decode_jpeg(data, colorspace="RGB", buffer=out)
  frame = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
  if out is None:
    return frame
  out[...] = frame
  return out
