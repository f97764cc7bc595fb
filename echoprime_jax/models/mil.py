"""Anatomical-attention MIL: gated attention over a study's videos, one head per report section.

`features: (B, V, F)` per-video features (EchoPrime's layout: 512-d video embedding ++ 11-d view
one-hot, `section_table.video_features`), `video_mask: (B, V)` bool ->
`(section embeddings (B, S, out_dim), attention (B, S, V))`.

Gated attention (Ilse et al., 2018): score[s, v] = w_s . (tanh(V h_v) * sigmoid(U h_v)), with
the hidden projections shared by the sections and one scoring vector w_s per section; a softmax
over the study's real videos gives the attention, the attended mean of the video embeddings (the
first `embed_dim` features) is projected to the text tower's space. The view one-hot enters the
scores only, so attention can learn "which view informs this section" while the pooled
embedding stays in the video tower's space.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from echoprime_jax.models import layers


@dataclasses.dataclass(frozen=True)
class MILConfig:
  num_sections: int = 15
  feature_dim: int = 523  # embed_dim + number of views
  embed_dim: int = 512
  hidden_dim: int = 128
  out_dim: int = 512
  dtype: str = "float32"
  param_dtype: str = "float32"


class GatedAttentionMIL(nnx.Module):

  def __init__(self, cfg: MILConfig, *, rngs: nnx.Rngs):
    self.config = cfg
    kw = dict(dtype=cfg.dtype, param_dtype=cfg.param_dtype, rngs=rngs)
    self.attn_v = layers.linear(cfg.feature_dim, cfg.hidden_dim, **kw)
    self.attn_u = layers.linear(cfg.feature_dim, cfg.hidden_dim, **kw)
    self.attn_w = layers.linear(cfg.hidden_dim, cfg.num_sections, **kw)
    self.proj = layers.linear(cfg.embed_dim, cfg.out_dim, **kw)

  def attention(self, features: jax.Array, video_mask: jax.Array) -> jax.Array:
    """(B, V, F), (B, V) -> (B, S, V) weights: softmax over real videos (0 on padding; all
    zeros for a study without videos)."""
    gated = jnp.tanh(self.attn_v(features)) * jax.nn.sigmoid(self.attn_u(features))
    scores = self.attn_w(gated).astype(jnp.float32).transpose(0, 2, 1)  # (B, S, V)
    mask = video_mask[:, None, :]
    scores = jnp.where(mask, scores, -jnp.inf)
    weights = jax.nn.softmax(scores, axis=-1, where=mask)
    return jnp.where(mask, weights, 0.0)

  def __call__(self, features: jax.Array, video_mask: jax.Array
               ) -> tuple[jax.Array, jax.Array]:
    weights = self.attention(features, video_mask)
    embeddings = features[..., :self.config.embed_dim]
    pooled = jnp.einsum("bsv,bvd->bsd", weights.astype(embeddings.dtype), embeddings)
    return self.proj(pooled), weights
