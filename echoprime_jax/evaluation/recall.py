"""Retrieval recall at video and study level, computed on the device in chunks.

  recall_at_k(video (N, D), text (N, D), study (N,)) -> {"video_to_report_R@10": ..., ...}

Nothing of size N x S is ever held: queries go through in chunks of `chunk` rows, each chunk's
similarities to all keys are reduced at once to the rank of the query's own key (how many keys
score higher). Memory is chunk x max(N, S) floats; 100k clips x 10k studies takes seconds
(benchmarks/recall.py). Ties are broken by key index, as a stable sort would.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

DIRECTIONS = ("video_to_report", "report_to_video", "study_to_report", "report_to_study")


@functools.partial(jax.jit, static_argnames=("chunk",))
def own_ranks(queries: jax.Array, keys: jax.Array, query_group: jax.Array,
              key_group: jax.Array, *, chunk: int = 1024) -> jax.Array:
  """queries (Q, D), keys (K, D), groups (Q,), (K,) -> (Q,) 0-based rank of each query's best
  own key (key_group == query_group) among all keys by dot product; K where it has none.
  A hit at k is rank < k."""
  q, k = queries.shape[0], keys.shape[0]
  padded = -(-q // chunk) * chunk
  queries = jnp.pad(queries, ((0, padded - q), (0, 0)))
  query_group = jnp.pad(query_group, (0, padded - q), constant_values=-1)
  column = jnp.arange(k)

  def rank(block):
    rows, groups = block
    sim = rows @ keys.T  # (chunk, K)
    own = key_group[None, :] == groups[:, None]
    masked = jnp.where(own, sim, -jnp.inf)
    best_col = jnp.argmax(masked, axis=1)  # the first of the best-scoring own keys
    best = jnp.take_along_axis(sim, best_col[:, None], axis=1)
    ahead = (sim > best) | ((sim == best) & (column[None, :] < best_col[:, None]))
    return jnp.where(own.any(axis=1), ahead.sum(axis=1), k)

  ranks = jax.lax.map(rank, (queries.reshape(-1, chunk, queries.shape[1]),
                             query_group.reshape(-1, chunk)))
  return ranks.reshape(-1)[:q]


def recall_at_k(video: np.ndarray, text: np.ndarray, study: np.ndarray,
                ks: tuple[int, ...] = (1, 5, 10), chunk: int = 1024) -> dict[str, float]:
  """video (N, D), text (N, D) L2-normalised, study (N,) ids; every video's report is its
  study's (reports deduplicated per study). video->report: rank the S reports for each video;
  report->video: rank the N videos for each report (a hit is any video of the study). Study
  level: a study's embedding is the normalised mean of its videos'. `mean_R@10` averages the
  four R@10 (the default metric for keeping the best checkpoint)."""
  studies, first, owner = np.unique(study, return_index=True, return_inverse=True)
  s = len(studies)
  reports = jnp.asarray(text[first], jnp.float32)  # (S, D)
  video_j = jnp.asarray(video, jnp.float32)
  owner_j = jnp.asarray(owner, jnp.int32)
  ids = jnp.arange(s, dtype=jnp.int32)
  mean = jax.ops.segment_sum(video_j, owner_j, num_segments=s)
  mean = mean / jnp.linalg.norm(mean, axis=1, keepdims=True)
  ranks = {
      "video_to_report": own_ranks(video_j, reports, owner_j, ids, chunk=chunk),
      "report_to_video": own_ranks(reports, video_j, ids, owner_j, chunk=chunk),
      "study_to_report": own_ranks(mean, reports, ids, ids, chunk=chunk),
      "report_to_study": own_ranks(reports, mean, ids, ids, chunk=chunk),
  }
  ranks = {d: np.asarray(r) for d, r in ranks.items()}
  out = {f"{d}_R@{k}": float(np.mean(ranks[d] < k)) for k in ks for d in DIRECTIONS}
  if 10 in ks:
    out["mean_R@10"] = float(np.mean([out[f"{d}_R@10"] for d in DIRECTIONS]))
  out["num_videos"], out["num_studies"] = float(len(video)), float(s)
  out["chance_R@10"] = float(min(10, s) / s)
  return out
