"""On-device pixel normalisation (inside the jitted step), so batches travel as uint8.

EchoPrime normalises 0-255 pixels with a per-channel mean/std measured on its training data and
pads short clips with zeros *after* normalisation; `frame_mask` reproduces that.
"""

from __future__ import annotations

import jax.numpy as jnp

# EchoPrime's pixel statistics on the 0-255 scale (RGB).
MEAN = (29.110628, 28.076836, 29.096405)
STD = (47.989223, 46.456997, 47.20083)


def normalize_video(video: jnp.ndarray, frame_mask: jnp.ndarray | None = None,
                    dtype=jnp.float32) -> jnp.ndarray:
  """(..., T, H, W, 3) uint8 -> same shape `dtype`; frames where frame_mask (..., T) is False
  become exactly zero."""
  x = (video.astype(jnp.float32) - jnp.asarray(MEAN)) / jnp.asarray(STD)
  if frame_mask is not None:
    x = jnp.where(frame_mask[..., None, None, None], x, 0.0)
  return x.astype(dtype)
