"""Candidate search at EchoPrime's database size: ScaNN vs the exact path, in one run.

  python benchmarks/retrieval.py                       # 1,230,676 x 512, 1,500 queries
  python benchmarks/retrieval.py --size 200000 --no-write

Database: --size L2-normalised 512-d vectors drawn as a clustered mixture (--clusters random
unit centres, each point its centre plus isotropic noise of relative size --noise, then
normalised): embeddings of real reports are clustered, and uniformly random vectors in 512-d
have no near neighbours to find at all. Queries are fresh draws from the same mixture.
Exact: `retrieval.search_index.ExactIndex` (jitted matmul + top-k over database chunks, fp32). ScaNN:
`ScannIndex.build` (tree + AH + exact re-ordering) searched at each --search_leaves setting.
Reported: recall@10 against the exact top 10, queries per second (all cores; search is
batched), the speed-up over exact, build time, and this process's peak RSS.
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks.common import cpu_name, peak_rss_mb, publish  # noqa: E402


def mixture(n: int, dim: int, centres: np.ndarray, noise: float, seed: int) -> np.ndarray:
  rng = np.random.default_rng(seed)
  out = np.empty((n, dim), np.float32)
  for start in range(0, n, 100_000):
    m = min(100_000, n - start)
    x = centres[rng.integers(0, len(centres), m)]
    x = x + rng.standard_normal((m, dim), dtype=np.float32) * (noise / np.sqrt(dim))
    out[start:start + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
  return out


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--size", type=int, default=1_230_676, help="database rows (EchoPrime's)")
  p.add_argument("--dim", type=int, default=512, help="embedding size (512)")
  p.add_argument("--queries", type=int, default=1500, help="queries (1,500)")
  p.add_argument("--clusters", type=int, default=20000, help="mixture components (20,000)")
  p.add_argument("--noise", type=float, default=0.6,
                 help="noise norm relative to the unit centre (0.6)")
  p.add_argument("--leaves", type=int, default=0, help="ScaNN leaves (0: ~sqrt(size))")
  p.add_argument("--search_leaves", default="16,32,64",
                 help="comma-separated leaves searched per query, one row each")
  p.add_argument("--reorder", type=int, default=250, help="exactly re-scored candidates (250)")
  p.add_argument("--k", type=int, default=10, help="neighbours (10)")
  p.add_argument("--no-write", action="store_true", help="do not update benchmarks/RESULTS.md")
  args = p.parse_args()

  from echoprime_jax.retrieval import search_index as index

  rng = np.random.default_rng(0)
  centres = rng.standard_normal((args.clusters, args.dim)).astype(np.float32)
  centres /= np.linalg.norm(centres, axis=1, keepdims=True)
  t = time.perf_counter()
  db = mixture(args.size, args.dim, centres, args.noise, 1)
  queries = mixture(args.queries, args.dim, centres, args.noise, 2)
  print(f"data: {args.size} x {args.dim} in {time.perf_counter() - t:.1f} s", flush=True)

  exact = index.ExactIndex(db, db_chunk=65536, query_chunk=args.queries)
  exact.search(queries[:8], args.k)  # compile (another shape: warms the kernels only)
  t = time.perf_counter()
  truth, _ = exact.search(queries, args.k)
  exact_s = time.perf_counter() - t
  exact_qps = args.queries / exact_s
  print(f"exact: {exact_s:.1f} s, {exact_qps:.0f} QPS", flush=True)

  t = time.perf_counter()
  scann = index.ScannIndex.build(db, num_leaves=args.leaves or None, reorder=args.reorder,
                                 k=args.k)
  build_s = time.perf_counter() - t
  print(f"ScaNN build: {build_s:.1f} s, {scann.params}", flush=True)
  rows = []
  for leaves in [int(x) for x in args.search_leaves.split(",")]:
    scann.search(queries[:64], args.k, leaves_to_search=leaves)  # warm-up
    t = time.perf_counter()
    found, _ = scann.search(queries, args.k, leaves_to_search=leaves)
    s = time.perf_counter() - t
    r = index.recall_at_k(found, truth, args.k)
    rows.append((leaves, r, args.queries / s))
    print(f"ScaNN leaves {leaves}: recall@{args.k} {r:.4f}, {args.queries / s:.0f} QPS, "
          f"{exact_s / s:.1f}x exact", flush=True)

  lines = [
      f"### Retrieval: ScaNN vs exact ({datetime.date.today().isoformat()}, {cpu_name()}, "
      f"{os.cpu_count()} cores)",
      "",
      f"{args.size:,} x {args.dim} candidates (clustered mixture: {args.clusters:,} centres, "
      f"noise {args.noise}), {args.queries:,} queries, top {args.k}. Exact: jitted fp32 matmul + "
      f"top-k in 65,536-row chunks, {exact_s:.1f} s = **{exact_qps:.0f} QPS**. ScaNN: "
      f"{scann.params['num_leaves']} leaves, AH {scann.params['dims_per_block']} dims/block, "
      f"threshold {scann.params['quantization_threshold']}, re-order {args.reorder}; build "
      f"{build_s:.0f} s; peak RSS {peak_rss_mb():.0f} MB (database + index + exact copy).",
      "",
      f"| leaves searched | recall@{args.k} | QPS | speed-up vs exact |",
      "|---|---|---|---|",
  ]
  for leaves, r, qps in rows:
    lines.append(f"| {leaves} | {r:.4f} | {qps:.0f} | **{qps / exact_qps:.1f}x** |")
  lines += ["", "Reproduce: `python benchmarks/retrieval.py`."]
  publish("retrieval", lines, write=not args.no_write)


if __name__ == "__main__":
  main()
