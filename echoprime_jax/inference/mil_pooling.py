"""A trained section aggregator (MIL) applied to studies: per report section, a study's videos
pooled into one embedding, and the attention each video received.

  pooled, attention = pool_study(model, video_embedding, views)      # one study
  outputs = SplitPooler(graphdef, emb, ...)(params, rest)             # every study of a split

Features are EchoPrime's 512 + 11 layout: the L2-normalised video embedding ++ the view's
one-hot (zeros for an unknown view). Pooled embeddings are L2-normalised.
"""

from __future__ import annotations

import jax
import numpy as np
from flax import nnx

from data_prep.views import COARSE_VIEWS
from echoprime_jax import losses
from echoprime_jax.data.split_embeddings import SplitEmbeddings
from echoprime_jax.inference import attention_table


def predict(model, batch: dict) -> dict[str, jax.Array]:
  """batch: features (B, V, D + K), video_mask (B, V) -> pooled (B, S, D) L2-normalised,
  attention (B, S, V)."""
  pooled, attention = model(batch["features"], batch["video_mask"])
  return {"pooled": losses.l2_normalize(pooled), "attention": attention}


def pool_study(model, video_embedding: np.ndarray, views: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray]:
  """One study: video_embedding (N, D) L2-normalised, views (N,) coarse-view ids (-1 unknown)
  -> (pooled (S, D), attention (S, N)): every video attended, none left out."""
  import jax.numpy as jnp
  features = attention_table.video_features(jnp.asarray(video_embedding, jnp.float32)[None],
                                            jnp.asarray(views, jnp.int32)[None],
                                            len(COARSE_VIEWS))
  out = predict(model, {"features": features,
                        "video_mask": jnp.ones((1, len(video_embedding)), bool)})
  return np.asarray(out["pooled"][0]), np.asarray(out["attention"][0])


class SplitPooler:
  """Every study of a split (from its cached embeddings) through an aggregator of one graph;
  built once, called with any parameters (each evaluation of a training run)."""

  def __init__(self, graphdef, emb: SplitEmbeddings, *, batch_size: int, max_videos: int,
               mesh, seed: int = 0):
    from echoprime_jax import parallel
    from echoprime_jax.data import study_features
    if batch_size % jax.process_count():
      raise ValueError(f"batch size {batch_size} is not divisible by {jax.process_count()} "
                       "processes")
    self.emb = emb
    self.dataset = study_features.dataset(
        emb, study_features.FeatureConfig(batch_size // jax.process_count(), max_videos,
                                          len(COARSE_VIEWS), seed, 1), train=False)
    self.sharding = parallel.batch_sharding(mesh)
    self.step = jax.jit(lambda params, rest, batch: predict(nnx.merge(graphdef, params, rest),
                                                            batch))

  def __call__(self, params, rest) -> dict[str, np.ndarray]:
    """-> pooled (M, S, D), attention (M, S, V), video_index (M, V), views (M, V),
    video_mask (M, V), study (M,), in study order."""
    from echoprime_jax.inference.batches import predict_all
    return predict_all(lambda batch: self.step(params, rest, batch), self.dataset,
                       self.sharding, inputs=("features", "video_mask"),
                       carry=("video_index", "views", "video_mask", "study"), order_by="study")
