"""Training augmentation for echo clips: RandAugment-style ops + random erasing, one draw per clip.

Split in two so that the input workers only decode (the host is what caps video training):
  * host (`draw_params`, NumPy, inside Grain's random_map): draw the ops of one clip and turn
    them into three small arrays that travel with the batch;
  * device (`apply`, JAX, inside the jitted step): warp, remap intensities and erase every frame
    of the clip with them. On an accelerator this is a few gathers per clip, noise next to the
    towers; on the host it was ~2/3 of a worker's time (Pillow warp + LUT + RGB copies).

Every frame of a clip gets the same transform (motion between frames is the signal). Ops:
  geometric  rotate, translate_x, translate_y, shear_x, shear_y, scale -- composed into one
             affine map about the image centre, nearest-neighbour (as torchvision's RandAugment);
  intensity  gamma, contrast (about the clip's mean), brightness -- one 256-entry table per clip
             in which black stays black (the masked-out area outside the sector must not light up).
RandAugment: `num_ops` distinct ops drawn uniformly, each at a magnitude drawn uniformly in
[0, magnitude] (of 10) with a random sign. Then random erasing: with probability `erase_prob`
one rectangle (area and aspect ratio drawn from the config) is zeroed in every frame. No flips:
left-right matters for echo views.

Batch keys (per clip; identity values mean "op not drawn"):
  aug_affine    (..., 2, 3) float32   output pixel (x, y, 1) -> input pixel (x, y), pixel-index
                                      coordinates (pixel centres at integers)
  aug_intensity (..., 3) float32      (gamma exponent, contrast factor, brightness factor)
  aug_erase     (..., 4) int32        (y0, x0, y1, x1) of the zeroed box; empty when y0 == y1
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

GEOMETRIC = ("rotate", "translate_x", "translate_y", "shear_x", "shear_y", "scale")
INTENSITY = ("brightness", "contrast", "gamma")
ALL_OPS = GEOMETRIC + INTENSITY
KEYS = ("aug_affine", "aug_intensity", "aug_erase")

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

  def __post_init__(self):
    unknown = set(self.ops) - set(ALL_OPS)
    if unknown:
      raise ValueError(f"unknown augmentation ops {sorted(unknown)}; known: {ALL_OPS}")
    if not 0 <= self.num_ops <= len(self.ops):
      raise ValueError(f"num_ops must be in [0, {len(self.ops)}], got {self.num_ops}")


# ----------------------------------------------------------------------------- host: draws

def draw(rng: np.random.Generator, config: AugmentConfig) -> dict[str, float]:
  """The ops of one clip and their signed strengths, e.g. {"rotate": -12.3, "gamma": 0.2}."""
  chosen = rng.choice(len(config.ops), size=config.num_ops, replace=False)
  params = {}
  for i in sorted(int(c) for c in chosen):
    op = config.ops[i]
    strength = rng.uniform(0.0, config.magnitude / 10.0) * _MAX[op]
    params[op] = float(strength if rng.random() < 0.5 else -strength)
  return params


def affine_matrix(params: dict[str, float], h: int, w: int) -> np.ndarray:
  """3x3 output->input pixel map for the geometric ops in `params` (identity when none)."""
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
  return np.linalg.inv(shift @ m @ centre)


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


def identity_params() -> dict[str, np.ndarray]:
  """Parameters that leave a clip unchanged (padding slots of a study)."""
  return {"aug_affine": np.eye(3, dtype=np.float32)[:2],
          "aug_intensity": np.ones((3,), np.float32),
          "aug_erase": np.zeros((4,), np.int32)}


def draw_params(rng: np.random.Generator, config: AugmentConfig, h: int, w: int
                ) -> dict[str, np.ndarray]:
  """One clip's augmentation as the batch arrays of the module docstring (a pure function of
  the generator state: Grain's random_map seeds it per element and epoch)."""
  params = draw(rng, config)
  box = erase_box(rng, h, w, config)
  return {"aug_affine": affine_matrix(params, h, w)[:2].astype(np.float32),
          "aug_intensity": np.array([math.exp(params.get("gamma", 0.0)),
                                     1.0 + params.get("contrast", 0.0),
                                     1.0 + params.get("brightness", 0.0)], np.float32),
          "aug_erase": np.asarray(box if box is not None else (0, 0, 0, 0), np.int32)}


# ----------------------------------------------------------------------------- device: apply

def intensity_lut(intensity: jax.Array, pivot: jax.Array) -> jax.Array:
  """(N, 3) (gamma, contrast, brightness) + (N,) pivot -> (N, 256) uint8 tables; entry 0 is 0."""
  x = jnp.arange(256, dtype=jnp.float32)
  gamma, contrast, brightness = (intensity[:, i:i + 1] for i in range(3))
  x = 255.0 * (x / 255.0) ** gamma
  x = pivot[:, None] + (x - pivot[:, None]) * contrast
  x = x * brightness
  lut = jnp.clip(jnp.round(x), 0, 255).astype(jnp.uint8)
  return lut.at[:, 0].set(0)


def apply(video: jax.Array, affine: jax.Array, intensity: jax.Array, erase: jax.Array
          ) -> jax.Array:
  """Augment clips on the device.

  video (..., T, H, W, C) uint8, affine (..., 2, 3), intensity (..., 3), erase (..., 4)
  -> (..., T, H, W, C) uint8. Padded (all-zero) frames stay zero: warping moves zeros, the
  tables keep 0 at 0 and erasing writes 0.
  """
  *lead, t, h, w, c = video.shape
  clips = video.reshape(-1, t, h * w, c)
  affine = affine.reshape(-1, 2, 3).astype(jnp.float32)
  erase = erase.reshape(-1, 4)
  pivot = clips[:, :, ::16].astype(jnp.float32).mean(axis=(1, 2, 3))
  ys, xs = jnp.meshgrid(jnp.arange(h, dtype=jnp.float32), jnp.arange(w, dtype=jnp.float32),
                        indexing="ij")
  ys, xs = ys.reshape(-1), xs.reshape(-1)
  # Source coordinates by explicit multiply-adds, not a matmul: accelerators may run f32
  # matmuls in TF32/bf16, which moves a 224-px coordinate by a tenth of a pixel.
  a = affine[:, :, :, None]
  sx = a[:, 0, 0] * xs + a[:, 0, 1] * ys + a[:, 0, 2]
  sy = a[:, 1, 0] * xs + a[:, 1, 1] * ys + a[:, 1, 2]
  ix, iy = jnp.floor(sx + 0.5).astype(jnp.int32), jnp.floor(sy + 0.5).astype(jnp.int32)
  inside = (ix >= 0) & (ix < w) & (iy >= 0) & (iy < h)
  source = jnp.where(inside, iy * w + ix, 0)  # (N, H*W)
  warped = jax.vmap(lambda frames, s: frames[:, s, :])(clips, source)
  warped = jnp.where(inside[:, None, :, None], warped, 0)
  lut = intensity_lut(intensity.reshape(-1, 3).astype(jnp.float32), pivot)
  out = jax.vmap(lambda table, x: table[x])(lut, warped)
  y, x = (ys[None].astype(jnp.int32), xs[None].astype(jnp.int32))
  erased = ((y >= erase[:, 0:1]) & (y < erase[:, 2:3]) & (x >= erase[:, 1:2])
            & (x < erase[:, 3:4]))
  out = jnp.where(erased[:, None, :, None], 0, out)
  return out.reshape(video.shape)


def batch_video(batch: dict, key: str = "video") -> jax.Array:
  """batch[key] (clips: "video", studies: "videos"), augmented on the device when the batch
  carries augmentation parameters (training with augmentation on); else passed through."""
  if KEYS[0] not in batch:
    return batch[key]
  return apply(batch[key], *(batch[k] for k in KEYS))
