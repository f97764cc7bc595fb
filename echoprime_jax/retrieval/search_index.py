"""Maximum-inner-product search over (N, D) float32 embeddings: exact and ScaNN.

* `ExactIndex`: the reference and the small-database path. Queries and the database are
  scored in chunks by a jitted matmul + `lax.top_k` (a `lax.scan` over database chunks that
  carries the running top k), so memory stays O(query chunk x database chunk) at any size.
* `ScannIndex`: ScaNN (partitioning tree + anisotropic vector quantisation + exact
  re-ordering of a short list). The knobs: `num_leaves` (default ~sqrt(N)),
  `leaves_to_search`, `dims_per_block` (AH codebook size), `reorder` (candidates re-scored
  exactly); search batches are bounded by `query_chunk`.
Both: `search(queries (Q, D), k) -> (indices (Q, k) int64, scores (Q, k) float32)`, best
first, and `save(dir)` / `load_index(dir)`. `recall_at_k` compares an approximate result with
the exact one (the fraction of the true top k found).
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os

import jax
import jax.numpy as jnp
import numpy as np

log = logging.getLogger("echoprime_jax.retrieval")

FORMAT = 1


class ExactIndex:
  """Brute-force inner product, chunked and jitted (see the module docstring)."""

  kind = "exact"

  def __init__(self, database: np.ndarray, db_chunk: int = 65536, query_chunk: int = 1024):
    self.database = np.ascontiguousarray(database, np.float32)
    self.db_chunk = int(min(db_chunk, max(len(self.database), 1)))
    self.query_chunk = int(query_chunk)
    n = len(self.database)
    pad = (-n) % self.db_chunk
    chunks = np.concatenate([self.database, np.zeros((pad, self.database.shape[1]),
                                                     np.float32)])
    self._chunks = chunks.reshape(-1, self.db_chunk, self.database.shape[1])
    self._device_chunks = None

  def __len__(self) -> int:
    return len(self.database)

  def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    k = min(int(k), len(self))
    if self._device_chunks is None:
      self._device_chunks = jnp.asarray(self._chunks)
    queries = np.asarray(queries, np.float32)
    out_i, out_s = [], []
    for start in range(0, len(queries), self.query_chunk):
      q = queries[start:start + self.query_chunk]
      n = len(q)
      if n < self.query_chunk and len(queries) > self.query_chunk:  # one compiled shape
        q = np.concatenate([q, np.zeros((self.query_chunk - n, q.shape[1]), np.float32)])
      scores, idx = exact_topk(jnp.asarray(q), self._device_chunks, k, len(self))
      out_s.append(np.asarray(jax.device_get(scores))[:n])
      out_i.append(np.asarray(jax.device_get(idx))[:n])
    return np.concatenate(out_i).astype(np.int64), np.concatenate(out_s)

  def save(self, directory: str) -> None:
    os.makedirs(directory, exist_ok=True)
    np.save(os.path.join(directory, "database.npy"), self.database)
    _write_meta(directory, {"kind": self.kind, "size": len(self)})


@functools.partial(jax.jit, static_argnums=(2, 3))
def exact_topk(queries, chunks, k: int, size: int):
  """queries (Q, D), chunks (C, n, D) -> top-k (scores, indices) over the first `size` rows."""
  n = chunks.shape[1]
  kk = min(k, n)

  def body(carry, xs):
    best_s, best_i = carry
    chunk, c = xs
    s = jnp.dot(queries, chunk.T, precision=jax.lax.Precision.HIGHEST)  # (Q, n)
    ids = c * n + jnp.arange(n)
    s = jnp.where(ids[None, :] < size, s, -jnp.inf)  # padding rows never win
    top_s, top_j = jax.lax.top_k(s, kk)
    merged_s = jnp.concatenate([best_s, top_s], axis=1)
    merged_i = jnp.concatenate([best_i, ids[top_j]], axis=1)
    keep_s, keep_j = jax.lax.top_k(merged_s, k)
    return (keep_s, jnp.take_along_axis(merged_i, keep_j, axis=1)), None

  init = (jnp.full((queries.shape[0], k), -jnp.inf, jnp.float32),
          jnp.zeros((queries.shape[0], k), jnp.int32))
  (scores, idx), _ = jax.lax.scan(body, init, (chunks, jnp.arange(chunks.shape[0])))
  return scores, idx


class ScannIndex:
  """ScaNN searcher over the database (dot product)."""

  kind = "scann"

  def __init__(self, searcher, size: int, params: dict, query_chunk: int = 4096):
    self.searcher, self.size, self.params = searcher, int(size), dict(params)
    self.query_chunk = int(query_chunk)

  def __len__(self) -> int:
    return self.size

  @classmethod
  def build(cls, database: np.ndarray, *, num_leaves: int | None = None,
            leaves_to_search: int | None = None, dims_per_block: int = 2,
            quantization_threshold: float = 0.2, reorder: int = 250,
            training_sample_size: int = 250_000, threads: int = 0, k: int = 10) -> "ScannIndex":
    """Defaults follow ScaNN's guidance: ~sqrt(N) leaves, search ~5% of them (at least 8),
    AH with 2 dimensions per block and anisotropic threshold 0.2, re-order 250 exactly."""
    import scann
    database = np.ascontiguousarray(database, np.float32)
    n = len(database)
    num_leaves = int(num_leaves or max(1, min(int(round(math.sqrt(n))), n // 50 or 1)))
    leaves_to_search = int(leaves_to_search or max(min(8, num_leaves),
                                                   int(math.ceil(num_leaves * 0.05))))
    builder = scann.scann_ops_pybind.builder(database, k, "dot_product")
    if num_leaves > 1:
      builder = builder.tree(num_leaves=num_leaves, num_leaves_to_search=leaves_to_search,
                             training_sample_size=min(training_sample_size, n))
    builder = builder.score_ah(dims_per_block,
                               anisotropic_quantization_threshold=quantization_threshold,
                               training_sample_size=min(training_sample_size, n))
    builder = builder.reorder(reorder)
    if threads:
      builder = builder.set_n_training_threads(threads)
    params = dict(num_leaves=num_leaves, leaves_to_search=leaves_to_search,
                  dims_per_block=dims_per_block, quantization_threshold=quantization_threshold,
                  reorder=reorder)
    log.info("building ScaNN over %d x %d: %s", n, database.shape[1], params)
    return cls(builder.build(), n, params)

  def search(self, queries: np.ndarray, k: int, leaves_to_search: int | None = None,
             reorder: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    queries = np.ascontiguousarray(queries, np.float32)
    k = min(int(k), self.size)
    leaves = int(leaves_to_search or self.params["leaves_to_search"])
    pre = max(k, int(reorder or self.params["reorder"]))
    out_i, out_s = [], []
    for start in range(0, len(queries), self.query_chunk):
      q = queries[start:start + self.query_chunk]
      if self.params["num_leaves"] > 1:
        idx, scores = self.searcher.search_batched_parallel(
            q, final_num_neighbors=k, pre_reorder_num_neighbors=pre, leaves_to_search=leaves)
      else:
        idx, scores = self.searcher.search_batched_parallel(
            q, final_num_neighbors=k, pre_reorder_num_neighbors=pre)
      out_i.append(np.asarray(idx, np.int64))
      out_s.append(np.asarray(scores, np.float32))
    return np.concatenate(out_i), np.concatenate(out_s)

  def save(self, directory: str) -> None:
    os.makedirs(os.path.join(directory, "scann"), exist_ok=True)
    self.searcher.serialize(os.path.join(directory, "scann"), relative_path=True)
    _write_meta(directory, {"kind": self.kind, "size": self.size, "params": self.params})


def _write_meta(directory: str, meta: dict) -> None:
  with open(os.path.join(directory, "index.json"), "w") as f:
    json.dump({**meta, "format": FORMAT}, f, indent=2)


def build_index(database: np.ndarray, kind: str = "auto", exact_below: int = 20_000,
                **scann_options):
  """kind: "exact", "scann", or "auto" (exact below `exact_below` rows: a tree over a few
  thousand vectors saves nothing and costs recall)."""
  if kind == "auto":
    kind = "exact" if len(database) < exact_below else "scann"
  if kind == "exact":
    return ExactIndex(database)
  if kind == "scann":
    return ScannIndex.build(database, **scann_options)
  raise ValueError(f"index kind must be exact, scann or auto, got {kind!r}")


# What a saved index folder may hold, by kind; anything else is refused before any loader reads
# the folder (databases are shared: a planted file must not get a chance to run).
_INDEX_FILES = {"exact": {"index.json", "database.npy"}, "scann": {"index.json", "scann"}}
_SCANN_FIXED = {"scann_assets.pbtxt", "scann_config.pb"}


def _refuse_unknown(directory: str, allowed: set[str]) -> None:
  unknown = sorted(set(os.listdir(directory)) - allowed)
  if unknown:
    raise ValueError(f"{directory}: unexpected files {unknown} in a saved index (refused: a "
                     "loader must not read files we did not write); rebuild the database with "
                     "python -m echoprime_jax.index build")


def _scann_assets(folder: str) -> set[str]:
  """The file names a serialized ScaNN searcher lists in its scann_assets.pbtxt (each a plain
  name inside `folder`), plus its two fixed files; the folder may hold nothing else. ScaNN's
  loader would unpickle a `scann_docids.pkl` if one were there: we never write one."""
  import re
  with open(os.path.join(folder, "scann_assets.pbtxt")) as f:
    names = set(re.findall(r'asset_path:\s*"([^"]*)"', f.read()))
  bad = sorted(n for n in names if not n or os.path.basename(n) != n or n in (".", ".."))
  if bad:
    raise ValueError(f"{folder}/scann_assets.pbtxt: asset paths {bad} point outside the index "
                     "(refused); rebuild the database with python -m echoprime_jax.index build")
  return names | _SCANN_FIXED


def load_index(directory: str):
  path = os.path.join(directory, "index.json")
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{directory}: no index.json (not a saved index)")
  with open(path) as f:
    meta = json.load(f)
  kind = meta.get("kind")
  if kind not in _INDEX_FILES:
    raise ValueError(f"{path}: unknown index kind {kind!r}")
  _refuse_unknown(directory, _INDEX_FILES[kind])
  if kind == "exact":
    return ExactIndex(np.load(os.path.join(directory, "database.npy"), allow_pickle=False))
  import scann
  folder = os.path.join(directory, "scann")
  if not os.path.isfile(os.path.join(folder, "scann_assets.pbtxt")):
    raise FileNotFoundError(f"{folder}: no scann_assets.pbtxt (an incomplete index); rebuild "
                            "the database with python -m echoprime_jax.index build")
  _refuse_unknown(folder, _scann_assets(folder))
  searcher = scann.scann_ops_pybind.load_searcher(folder, assets_backcompat_shim=False)
  return ScannIndex(searcher, meta["size"], meta["params"])


def recall_at_k(approx: np.ndarray, exact: np.ndarray, k: int) -> float:
  """Mean fraction of each query's exact top k that the approximate top k contains."""
  hits = [len(set(a[:k].tolist()) & set(e[:k].tolist())) for a, e in zip(approx, exact)]
  return float(np.mean(hits)) / k
