"""Anatomical-attention MIL: attention over a study's videos, one head per report section.

Two aggregators with one interface,
`features: (B, V, F)` per-video features (EchoPrime's layout: L2-normalised 512-d video
embedding ++ 11-d view one-hot, `inference.attention_table.video_features`),
`video_mask: (B, V)` bool ->
`(section embeddings (B, S, out_dim), attention (B, S, V))`:

* `GatedAttentionMIL` (learned). Gated attention (Ilse et al., 2018):
  score[s, v] = w_s . (tanh(V h_v) * sigmoid(U h_v)), the hidden projections shared by the
  sections and one scoring vector w_s per section; a softmax over the study's real videos gives
  the attention; the attended mean of the video embeddings (the first `embed_dim` features) is
  projected to the text tower's space. The view one-hot enters the scores only, so attention
  can learn "which view informs this section" while the pooled embedding stays in the video
  tower's space; the projection starts as the identity (the towers' joint space is already
  aligned by pretraining). `log_scale` is the temperature of the stage's contrastive loss.
  `attention="uniform"` weighs every real video the same (the projection is still trained):
  the ablation that says what learned attention adds.
* `FixedTableMIL` (not trainable): EchoPrime's released form, a (S, K) table of weights per
  (section, view) (`inference.attention_table.read_csv`); attention[s, v] = table[s, view(v)]
  normalised over the study's videos, so the pooled direction equals
  `inference.attention_table.pool`'s.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from echoprime_jax.models import layers


@dataclasses.dataclass(frozen=True)
class MILConfig:
  num_sections: int = 15
  feature_dim: int = 523  # embed_dim + number of views
  embed_dim: int = 512
  hidden_dim: int = 128
  out_dim: int = 512
  identity_init: bool = True  # projection starts as the identity (needs out_dim == embed_dim)
  # "gated": learned attention; "uniform": every real video weighs the same (the ablation
  # that trains the projection alone: what attention adds over plain pooling)
  attention: str = "gated"
  init_temperature: float = 0.07
  dtype: str = "float32"
  param_dtype: str = "float32"

  @property
  def num_views(self) -> int:
    return self.feature_dim - self.embed_dim


def _masked_softmax(scores: jax.Array, video_mask: jax.Array) -> jax.Array:
  """(B, S, V) scores, (B, V) mask -> softmax over real videos; 0 on padding, all zeros for a
  study without videos (finite gradients)."""
  mask = video_mask[:, None, :]
  weights = jax.nn.softmax(jnp.where(mask, scores, -jnp.inf), axis=-1, where=mask)
  return jnp.where(mask, weights, 0.0)


class GatedAttentionMIL(nnx.Module):

  def __init__(self, cfg: MILConfig, *, rngs: nnx.Rngs):
    self.config = cfg
    if cfg.attention not in ("gated", "uniform"):
      raise ValueError(f"attention must be gated or uniform, got {cfg.attention!r}")
    kw = dict(dtype=cfg.dtype, param_dtype=cfg.param_dtype, rngs=rngs)
    self.attn_v = layers.linear(cfg.feature_dim, cfg.hidden_dim, **kw)
    self.attn_u = layers.linear(cfg.feature_dim, cfg.hidden_dim, **kw)
    self.attn_w = layers.linear(cfg.hidden_dim, cfg.num_sections, **kw)
    init = layers.trunc_normal_02
    if cfg.identity_init:
      if cfg.out_dim != cfg.embed_dim:
        raise ValueError(f"identity_init needs out_dim == embed_dim, got {cfg.out_dim} and "
                         f"{cfg.embed_dim}")
      init = lambda key, shape, dtype: jnp.eye(shape[0], shape[1], dtype=dtype)  # noqa: E731
    self.proj = layers.linear(cfg.embed_dim, cfg.out_dim, kernel_init=init, **kw)
    self.log_scale = nnx.Param(jnp.asarray(math.log(1.0 / cfg.init_temperature), jnp.float32))

  def attention(self, features: jax.Array, video_mask: jax.Array) -> jax.Array:
    """(B, V, F), (B, V) -> (B, S, V) weights."""
    gated = jnp.tanh(self.attn_v(features)) * jax.nn.sigmoid(self.attn_u(features))
    scores = self.attn_w(gated).astype(jnp.float32).transpose(0, 2, 1)  # (B, S, V)
    if self.config.attention == "uniform":
      scores = jnp.zeros_like(scores)
    return _masked_softmax(scores, video_mask)

  def __call__(self, features: jax.Array, video_mask: jax.Array
               ) -> tuple[jax.Array, jax.Array]:
    weights = self.attention(features, video_mask)
    embeddings = features[..., :self.config.embed_dim]
    pooled = jnp.einsum("bsv,bvd->bsd", weights.astype(embeddings.dtype), embeddings)
    return self.proj(pooled), weights


class FixedTableMIL(nnx.Module):
  """EchoPrime's fixed (section, view) table as an aggregator; nothing in it is trained (the
  table is a plain constant, not an nnx.Param)."""

  def __init__(self, table: np.ndarray, embed_dim: int):
    self.table = jnp.asarray(table, jnp.float32)  # (S, K)
    self.embed_dim = embed_dim

  def attention(self, features: jax.Array, video_mask: jax.Array) -> jax.Array:
    views = features[..., self.embed_dim:]  # (B, V, K) one-hot (zeros: unknown view)
    w = jnp.einsum("sk,bvk->bsv", self.table, views.astype(jnp.float32))
    w = jnp.where(video_mask[:, None, :], w, 0.0)
    total = w.sum(-1, keepdims=True)
    return w / jnp.where(total > 0, total, 1.0)

  def __call__(self, features: jax.Array, video_mask: jax.Array
               ) -> tuple[jax.Array, jax.Array]:
    weights = self.attention(features, video_mask)
    embeddings = features[..., :self.embed_dim]
    return jnp.einsum("bsv,bvd->bsd", weights.astype(embeddings.dtype), embeddings), weights
