"""ConvNeXt (torchvision `convnext_{tiny,small,base,large}`) in Flax NNX: the view backbone.

`images: (B, H, W, 3)` normalised float -> `(B, num_classes)` logits. EchoPrime's released
view classifier is `convnext_base` with an 11-way head, fed frame 0 of each normalised clip.

The 7x7 depthwise convolutions use `cpu_kernels.depthwise_conv` (strided slices), not XLA:CPU's
grouped convolution, for the same reason as MViT's pooling (see that function); the stem and
downsampling convolutions (stride == kernel) are reshape + matmul (`cpu_kernels.PatchConv`).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import jax
import jax.numpy as jnp
from flax import nnx

from echoprime_jax.models import cpu_kernels, layers


@dataclasses.dataclass(frozen=True)
class ConvNeXtConfig:
  depths: tuple[int, ...] = (3, 3, 27, 3)
  dims: tuple[int, ...] = (128, 256, 512, 1024)
  num_classes: int = 11  # EchoPrime's coarse views (data_prep.views.COARSE_VIEWS)
  layer_scale_init: float = 1e-6
  stochastic_depth: float = 0.5
  norm_eps: float = 1e-6
  dtype: str = "float32"
  param_dtype: str = "float32"

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)

  @classmethod
  def from_dict(cls, d: Mapping[str, Any]) -> "ConvNeXtConfig":
    d = dict(d)
    d["depths"], d["dims"] = tuple(d["depths"]), tuple(d["dims"])
    return cls(**d)

  def replace(self, **kw) -> "ConvNeXtConfig":
    return dataclasses.replace(self, **kw)


# torchvision's variants (depths, widths, stochastic depth).
VARIANTS = {
    "tiny": ((3, 3, 9, 3), (96, 192, 384, 768), 0.1),
    "small": ((3, 3, 27, 3), (96, 192, 384, 768), 0.4),
    "base": ((3, 3, 27, 3), (128, 256, 512, 1024), 0.5),
    "large": ((3, 3, 27, 3), (192, 384, 768, 1536), 0.5),
}


def convnext(variant: str = "base", **overrides) -> ConvNeXtConfig:
  """torchvision's `convnext_<variant>` with a `num_classes` head (11 views by default)."""
  if variant == "test":  # a 2-stage toy for unit tests
    return ConvNeXtConfig(depths=(1, 2), dims=(16, 32), stochastic_depth=0.1).replace(**overrides)
  depths, dims, sd = VARIANTS[variant]
  return ConvNeXtConfig(depths=depths, dims=dims, stochastic_depth=sd).replace(**overrides)


class Block(nnx.Module):
  """x + layer_scale * MLP(LN(dwconv7x7(x))), channels-last."""

  def __init__(self, dim: int, drop_rate: float, cfg: ConvNeXtConfig, *, rngs: nnx.Rngs):
    dt, pdt = cfg.dtype, cfg.param_dtype
    self.dwconv = cpu_kernels.DepthwiseConv(dim, (7, 7), (1, 1), (3, 3), use_bias=True, dtype=dt,
                                       param_dtype=pdt, rngs=rngs)
    self.norm = layers.layer_norm(dim, eps=cfg.norm_eps, dtype=dt, param_dtype=pdt, rngs=rngs)
    self.pw1 = layers.linear(dim, 4 * dim, dtype=dt, param_dtype=pdt, rngs=rngs)
    self.pw2 = layers.linear(4 * dim, dim, dtype=dt, param_dtype=pdt, rngs=rngs)
    self.layer_scale = nnx.Param(jnp.full((dim,), cfg.layer_scale_init, pdt))
    self.drop_path = layers.drop_path(drop_rate, 4, rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    """(B, H, W, C) -> (B, H, W, C)."""
    y = self.pw2(layers.gelu(self.pw1(self.norm(self.dwconv(x)))))
    return x + self.drop_path(self.layer_scale[...].astype(y.dtype) * y)


class Stage(nnx.Module):
  """Optional downsampling (LN -> 2x2 stride-2 conv) then `depth` blocks."""

  def __init__(self, in_dim: int, dim: int, drop_rates: list[float], cfg: ConvNeXtConfig,
               *, rngs: nnx.Rngs):
    dt, pdt = cfg.dtype, cfg.param_dtype
    downsample = in_dim != dim
    self.down_norm = (layers.layer_norm(in_dim, eps=cfg.norm_eps, dtype=dt, param_dtype=pdt,
                                        rngs=rngs) if downsample else None)
    self.down_conv = (cpu_kernels.PatchConv(in_dim, dim, 2, dtype=dt, param_dtype=pdt, rngs=rngs)
                      if downsample else None)
    self.blocks = nnx.List([Block(dim, r, cfg, rngs=rngs) for r in drop_rates])

  def __call__(self, x: jax.Array) -> jax.Array:
    if self.down_conv is not None:
      x = self.down_conv(self.down_norm(x))
    for block in self.blocks:
      x = block(x)
    return x


class ConvNeXt(nnx.Module):
  """Stem (4x4 stride-4 conv + LN) -> stages -> global average pool -> LN -> Linear."""

  def __init__(self, cfg: ConvNeXtConfig, *, rngs: nnx.Rngs):
    self.config = cfg
    dt, pdt = cfg.dtype, cfg.param_dtype
    self.dtype = jnp.dtype(dt)
    self.stem_conv = cpu_kernels.PatchConv(3, cfg.dims[0], 4, dtype=dt, param_dtype=pdt, rngs=rngs)
    self.stem_norm = layers.layer_norm(cfg.dims[0], eps=cfg.norm_eps, dtype=dt, param_dtype=pdt,
                                       rngs=rngs)
    total = sum(cfg.depths)
    rates = [cfg.stochastic_depth * i / max(total - 1.0, 1.0) for i in range(total)]
    stages, start = [], 0
    for s, (depth, dim) in enumerate(zip(cfg.depths, cfg.dims)):
      in_dim = cfg.dims[s - 1] if s else dim
      stages.append(Stage(in_dim, dim, rates[start:start + depth], cfg, rngs=rngs))
      start += depth
    self.stages = nnx.List(stages)
    self.head_norm = layers.layer_norm(cfg.dims[-1], eps=cfg.norm_eps, dtype=dt, param_dtype=pdt,
                                       rngs=rngs)
    self.head = (layers.linear(cfg.dims[-1], cfg.num_classes, dtype=dt, param_dtype=pdt,
                               rngs=rngs) if cfg.num_classes else None)

  def features(self, images: jax.Array) -> jax.Array:
    """images: (B, H, W, 3) -> (B, dims[-1]) pooled, normalised features."""
    if images.ndim != 4 or images.shape[-1] != 3:
      raise ValueError(f"ConvNeXt expects images (B, H, W, 3), got shape {images.shape}")
    x = self.stem_norm(self.stem_conv(images.astype(self.dtype)))
    for stage in self.stages:
      x = stage(x)
    return self.head_norm(jnp.mean(x, axis=(1, 2)))

  def __call__(self, images: jax.Array) -> jax.Array:
    """images: (B, H, W, 3) normalised float -> (B, num_classes) logits."""
    x = self.features(images)
    return x if self.head is None else self.head(x)
