"""EchoPrime's anatomical-attention table: per (section, view) weights that pool a study's video
embeddings into one embedding per report section, and its CSV format.

EchoPrime released its MIL module only as such a table: a CSV with header `Section` + the 11
coarse view names, one row per section for the first 15 report sections (Postoperative Findings
has no row), values in [0, 1] with each row min-max scaled. `read_csv` loads that file (or one
exported from a trained aggregator with `write_csv`) as a fixed, non-trainable aggregator:

  section embedding[s] = L2-normalise( sum over the study's videos v of
                                       table[s, view(v)] * video embedding[v] )

Rows and columns are matched by name, not position, so a CSV with its columns in another
order reads the same.
"""

from __future__ import annotations

import csv

import jax
import jax.numpy as jnp
import numpy as np

from data_prep.reports import SECTIONS
from data_prep.views import COARSE_VIEWS

TABLE_SECTIONS = SECTIONS[:15]  # the released table has no "Postoperative Findings" row


def read_csv(path: str, sections=TABLE_SECTIONS, views=COARSE_VIEWS) -> np.ndarray:
  """CSV -> (len(sections), len(views)) float32 table in `sections` x `views` order."""
  with open(path, newline="") as f:
    rows = list(csv.reader(f))
  if not rows or not rows[0] or rows[0][0].strip() != "Section":
    raise ValueError(f"{path}: the first row must be the header 'Section,<view names>'")
  header = [h.strip() for h in rows[0][1:]]
  missing = [v for v in views if v not in header]
  if missing:
    raise ValueError(f"{path}: header lacks the views {missing}")
  by_section = {}
  for n, row in enumerate(rows[1:], start=2):
    if not row:
      continue
    if len(row) != len(header) + 1:
      raise ValueError(f"{path}: line {n} has {len(row)} fields, the header {len(header) + 1}")
    try:
      values = [float(x) for x in row[1:]]
    except ValueError as e:
      raise ValueError(f"{path}: line {n}: {e}") from None
    by_section[row[0].strip()] = dict(zip(header, values))
  absent = [s for s in sections if s not in by_section]
  if absent:
    raise ValueError(f"{path}: no row for the sections {absent}")
  table = np.asarray([[by_section[s][v] for v in views] for s in sections], np.float32)
  if not np.all(np.isfinite(table)) or table.min() < 0:
    raise ValueError(f"{path}: weights must be finite and >= 0")
  return table


def write_csv(table: np.ndarray, path: str, sections=TABLE_SECTIONS, views=COARSE_VIEWS) -> None:
  """(S, K) table -> EchoPrime's CSV layout."""
  table = np.asarray(table)
  if table.shape != (len(sections), len(views)):
    raise ValueError(f"table shape {table.shape} != ({len(sections)}, {len(views)})")
  with open(path, "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(["Section", *views])
    for name, row in zip(sections, table):
      writer.writerow([name, *(repr(float(x)) for x in row)])


def min_max_rows(weights: np.ndarray) -> np.ndarray:
  """(S, K) average attention -> each row scaled to [0, 1] (a constant row becomes all 1)."""
  w = np.asarray(weights, np.float64)
  lo, hi = w.min(1, keepdims=True), w.max(1, keepdims=True)
  span = hi - lo
  return np.where(span > 0, (w - lo) / np.where(span > 0, span, 1), 1.0).astype(np.float32)


def pool(embeddings: jax.Array, views: jax.Array, video_mask: jax.Array,
         table: jax.Array) -> jax.Array:
  """Section embeddings of each study with a fixed table.

  embeddings (B, V, D); views (B, V) int view index (-1 unknown: weight 0); video_mask (B, V)
  bool; table (S, K) -> (B, S, D), L2-normalised (all zeros where a section has no weighted
  video).
  """
  k = table.shape[1]
  known = (views >= 0) & (views < k) & video_mask
  w = jnp.where(known[:, None, :], jnp.asarray(table)[:, jnp.clip(views, 0, k - 1)]
                .transpose(1, 0, 2), 0.0)  # (B, S, V)
  pooled = jnp.einsum("bsv,bvd->bsd", w.astype(embeddings.dtype), embeddings)
  norm = jnp.linalg.norm(pooled, axis=-1, keepdims=True)
  return pooled / jnp.where(norm > 0, norm, 1.0)


def video_features(embeddings: jax.Array, views: jax.Array, num_views: int = len(COARSE_VIEWS)
                   ) -> jax.Array:
  """EchoPrime's per-video study feature: embedding (..., D) ++ one-hot view (..., K) ->
  (..., D + K) (523 for 512-d embeddings and 11 views; unknown views give a zero one-hot)."""
  return jnp.concatenate([embeddings, jax.nn.one_hot(views, num_views, dtype=embeddings.dtype)],
                         axis=-1)


def mean_attention(attention: np.ndarray, views: np.ndarray, video_mask: np.ndarray,
                    num_views: int) -> tuple[np.ndarray, np.ndarray]:
  """Mean attention per (section, view), relative to uniform (attention x the study's number
  of videos: 1 = an average video's share). attention (M, S, V), views / video_mask (M, V) ->
  (table (S, K), videos per view (K,)); views never seen get the row minimum."""
  n = video_mask.sum(1, keepdims=True)  # (M, 1)
  rel = attention * n[:, None, :]  # (M, S, V)
  known = video_mask & (views >= 0) & (views < num_views)
  one_hot = np.eye(num_views)[np.where(known, views, 0)] * known[..., None]  # (M, V, K)
  total = np.einsum("msv,mvk->sk", rel, one_hot)
  count = one_hot.sum((0, 1))
  table = np.where(count > 0, total / np.maximum(count, 1), np.nan)
  if np.isnan(table).all():
    return np.zeros_like(total), count
  row_min = np.nanmin(np.where(count > 0, table, np.nan), axis=1, keepdims=True)
  return np.where(count > 0, table, row_min), count
