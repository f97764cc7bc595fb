"""Training augmentation for echo clips: RandAugment-style ops + random erasing, one draw per clip.

Every frame of a clip gets the same transform (motion between frames is the signal). Ops:
  geometric  rotate, translate_x, translate_y, shear_x, shear_y, scale -- composed into one
             affine about the image centre and applied with one Pillow warp per frame;
  intensity  brightness, contrast, gamma -- composed into one 256-entry lookup table.
RandAugment: `num_ops` distinct ops drawn uniformly, each at a magnitude drawn uniformly in
[0, magnitude] (of 10) with a random sign. Then random erasing: with probability
`erase_prob` one rectangle (area and aspect ratio drawn from the config) is zeroed in every
frame. No flips: left-right matters for echo views.

`augment_clip(clip, rng, config)` is a pure function of its inputs: the same numpy Generator
state gives the same output (Grain's `random_map` provides a per-element, per-epoch seed).
Works on (T, H, W, C) uint8 with any C, so grey clips are augmented as one channel.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from PIL import Image

GEOMETRIC = ("rotate", "translate_x", "translate_y", "shear_x", "shear_y", "scale")
INTENSITY = ("brightness", "contrast", "gamma")
ALL_OPS = GEOMETRIC + INTENSITY

# The strength of each op at magnitude 10 (RandAugment's scale).
_MAX = {"rotate": 30.0,  # degrees
        "translate_x": 0.15, "translate_y": 0.15,  # fraction of the side
        "shear_x": 0.25, "shear_y": 0.25,  # shear factor
        "scale": 0.25,  # zoom 1 +- 0.25
        "brightness": 0.5, "contrast": 0.5,  # factor 1 +- 0.5
        "gamma": 0.5}  # exponent exp(+-0.5)


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
  num_ops: int = 2
  magnitude: float = 9.0  # out of 10
  ops: tuple[str, ...] = ALL_OPS
  erase_prob: float = 0.25
  erase_area: tuple[float, float] = (0.02, 0.2)  # fraction of the frame
  erase_aspect: tuple[float, float] = (0.3, 3.3)
  # "nearest" as torchvision's RandAugment (and ~9x cheaper than "bilinear" in Pillow)
  interpolation: str = "nearest"

  def __post_init__(self):
    unknown = set(self.ops) - set(ALL_OPS)
    if unknown:
      raise ValueError(f"unknown augmentation ops {sorted(unknown)}; known: {ALL_OPS}")
    if self.interpolation not in ("nearest", "bilinear"):
      raise ValueError(f"interpolation must be 'nearest' or 'bilinear', got "
                       f"{self.interpolation!r}")
    if not 0 <= self.num_ops <= len(self.ops):
      raise ValueError(f"num_ops must be in [0, {len(self.ops)}], got {self.num_ops}")


def draw(rng: np.random.Generator, config: AugmentConfig) -> dict[str, float]:
  """The ops of one clip and their signed strengths, e.g. {"rotate": -12.3, "gamma": 0.2}."""
  chosen = rng.choice(len(config.ops), size=config.num_ops, replace=False)
  params = {}
  for i in sorted(int(c) for c in chosen):
    op = config.ops[i]
    strength = rng.uniform(0.0, config.magnitude / 10.0) * _MAX[op]
    params[op] = float(strength if rng.random() < 0.5 else -strength)
  return params


def affine_matrix(params: dict[str, float], h: int, w: int) -> np.ndarray | None:
  """3x3 output->input pixel map for the geometric ops (None when there are none)."""
  if not any(op in params for op in GEOMETRIC):
    return None
  cx, cy = (w - 1) / 2.0, (h - 1) / 2.0
  m = np.eye(3)  # forward map (input -> output) about the centre, composed in a fixed order
  if "scale" in params:
    m = np.diag([1 + params["scale"], 1 + params["scale"], 1.0]) @ m
  if "shear_x" in params or "shear_y" in params:
    m = np.array([[1, params.get("shear_x", 0.0), 0], [params.get("shear_y", 0.0), 1, 0],
                  [0, 0, 1]]) @ m
  if "rotate" in params:
    a = math.radians(params["rotate"])
    m = np.array([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1]]) @ m
  shift = np.array([[1, 0, cx + params.get("translate_x", 0.0) * w],
                    [0, 1, cy + params.get("translate_y", 0.0) * h], [0, 0, 1]])
  centre = np.array([[1, 0, -cx], [0, 1, -cy], [0, 0, 1]])
  return np.linalg.inv(shift @ m @ centre)  # Pillow wants output -> input


def intensity_lut(params: dict[str, float], pivot: float) -> np.ndarray | None:
  """(256,) uint8 table for brightness / contrast (about `pivot`) / gamma (None if unused)."""
  if not any(op in params for op in INTENSITY):
    return None
  x = np.arange(256, dtype=np.float64)
  if "gamma" in params:
    x = 255.0 * (x / 255.0) ** math.exp(params["gamma"])
  if "contrast" in params:
    x = pivot + (x - pivot) * (1 + params["contrast"])
  if "brightness" in params:
    x = x * (1 + params["brightness"])
  lut = np.clip(np.round(x), 0, 255).astype(np.uint8)
  lut[0] = 0  # black stays black: the masked-out area outside the sector must not light up
  return lut


def erase_box(rng: np.random.Generator, h: int, w: int, config: AugmentConfig
              ) -> tuple[int, int, int, int] | None:
  """(y0, x0, y1, x1) of the rectangle to zero, or None (probability 1 - erase_prob)."""
  if config.erase_prob <= 0 or rng.random() >= config.erase_prob:
    return None
  area = rng.uniform(*config.erase_area) * h * w
  aspect = math.exp(rng.uniform(math.log(config.erase_aspect[0]),
                                math.log(config.erase_aspect[1])))
  eh = min(h, max(1, int(round(math.sqrt(area * aspect)))))
  ew = min(w, max(1, int(round(math.sqrt(area / aspect)))))
  y0, x0 = int(rng.integers(0, h - eh + 1)), int(rng.integers(0, w - ew + 1))
  return y0, x0, y0 + eh, x0 + ew


def augment_clip(clip: np.ndarray, rng: np.random.Generator, config: AugmentConfig,
                 frame_mask: np.ndarray | None = None) -> np.ndarray:
  """(T, H, W, C) uint8 -> the same shape, every frame transformed alike.

  frame_mask (T,) bool: padded frames (False) stay zero.
  """
  t, h, w, c = clip.shape
  params = draw(rng, config)
  box = erase_box(rng, h, w, config)
  out = clip
  matrix = affine_matrix(params, h, w)
  if matrix is not None:
    coeffs = tuple(matrix[:2].reshape(-1))
    resample = (Image.Resampling.NEAREST if config.interpolation == "nearest"
                else Image.Resampling.BILINEAR)
    out = np.empty_like(clip)
    for i in range(t):
      frame = clip[i, ..., 0] if c == 1 else clip[i]
      warped = Image.fromarray(frame).transform((w, h), Image.Transform.AFFINE, coeffs,
                                                resample=resample, fillcolor=0)
      out[i] = np.asarray(warped).reshape(h, w, c)
  lut = intensity_lut(params, pivot=float(clip[:, ::4, ::4].mean()))
  if lut is not None:
    out = np.take(lut, out)  # ~2x faster than lut[out]
  if box is not None:
    out = out.copy() if out is clip else out
    y0, x0, y1, x1 = box
    out[:, y0:y1, x0:x1] = 0
  if frame_mask is not None and not frame_mask.all():
    out = out.copy() if out is clip else out
    out[~frame_mask] = 0
  return out
