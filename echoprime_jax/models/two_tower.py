"""EchoPrime's video-report model: MViT video tower, BERT text tower, a learnable temperature.

`video (B, T, H, W, 3)` normalised float -> `(B, D)`; `text_ids, text_mask (B, L)` -> `(B, D)`;
both unnormalised (the loss normalises). `log_scale` is log(1 / temperature), initialised at
log(1 / 0.07) as in CLIP; `bias` is SigLIP's logit bias (unused by the InfoNCE loss).
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
from flax import nnx

from echoprime_jax.models import mvit, text_encoder


@dataclasses.dataclass(frozen=True)
class TwoTowerConfig:
  video: mvit.MViTConfig
  text: text_encoder.TextEncoderConfig
  init_temperature: float = 0.07
  init_bias: float = -10.0  # SigLIP's initial logit bias


class TwoTower(nnx.Module):

  def __init__(self, cfg: TwoTowerConfig, *, rngs: nnx.Rngs):
    if cfg.video.num_outputs != cfg.text.out_dim:
      raise ValueError(f"video embedding {cfg.video.num_outputs} != text embedding "
                       f"{cfg.text.out_dim}")
    self.config = cfg
    self.video = mvit.MViT(cfg.video, rngs=rngs)
    self.text = text_encoder.TextEncoder(cfg.text, rngs=rngs)
    self.log_scale = nnx.Param(jnp.asarray(math.log(1.0 / cfg.init_temperature), jnp.float32))
    self.bias = nnx.Param(jnp.asarray(cfg.init_bias, jnp.float32))

  def embed_video(self, video: jax.Array) -> jax.Array:
    return self.video(video)

  def embed_text(self, text_ids: jax.Array, text_mask: jax.Array) -> jax.Array:
    return self.text(text_ids, text_mask)

  def __call__(self, video: jax.Array, text_ids: jax.Array, text_mask: jax.Array
               ) -> tuple[jax.Array, jax.Array]:
    return self.embed_video(video), self.embed_text(text_ids, text_mask)
