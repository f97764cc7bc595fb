"""Evaluation recall at held-out scale: the chunked on-device ranking vs the NumPy argsort path.

  python benchmarks/recall.py                     # 100,000 clips x 10,000 studies, 512-d
  python benchmarks/recall.py --videos 20000 --studies 2000 --no-write

`evaluation.recall.recall_at_k` (jitted, queries in chunks, never N x S in memory) at the full
size, and both it and the earlier NumPy path (N x S similarities plus two full argsorts, kept
here as the baseline) at --baseline_videos x --baseline_studies, where the baseline still fits:
the same figures from both, time and peak RSS each in a fresh process. At 100k x 10k the
baseline would hold 4 GB of similarities and 8 GB of argsort indices per direction.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks.common import cpu_name, peak_rss_mb, publish, spawn  # noqa: E402


def embeddings(n: int, s: int, d: int, seed: int = 0):
  """Videos near their study's report (noise comparable to the signal: recall neither 0 nor 1)."""
  rng = np.random.default_rng(seed)
  text = rng.normal(size=(s, d)).astype(np.float32)
  study = np.sort(rng.integers(0, s, n))
  study[:s] = np.arange(s)
  video = text[study] + 7.0 * rng.normal(size=(n, d)).astype(np.float32)
  norm = lambda x: (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)  # noqa
  return norm(video), norm(text)[study], study


def numpy_recall(video, text, study, ks=(1, 5, 10)):
  """The earlier implementation: full similarity matrices and argsorts, loops over studies."""
  studies, first = np.unique(study, return_index=True)
  reports = text[first]
  owner = np.searchsorted(studies, study)
  sim = video @ reports.T
  v_rank = np.argsort(-sim, axis=1)
  t_rank = np.argsort(-sim.T, axis=1)
  out = {}
  for k in ks:
    out[f"video_to_report_R@{k}"] = float(np.mean([owner[i] in v_rank[i, :k]
                                                   for i in range(len(video))]))
    out[f"report_to_video_R@{k}"] = float(np.mean([np.any(owner[t_rank[s, :k]] == s)
                                                   for s in range(len(studies))]))
  return out


def worker(kind: str, n: int, s: int, d: int) -> dict:
  video, text, study = embeddings(n, s, d)
  if kind == "jax":
    from echoprime_jax.evaluation.recall import recall_at_k
    recall_at_k(video[:2048], text[:2048], study[:2048])  # compile once (chunk shapes differ)
    t = time.perf_counter()
    out = recall_at_k(video, text, study)
  else:
    t = time.perf_counter()
    out = numpy_recall(video, text, study)
  return {"seconds": time.perf_counter() - t, "rss_mb": peak_rss_mb(),
          "v2r": out["video_to_report_R@10"], "r2v": out["report_to_video_R@10"]}


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--videos", type=int, default=100_000, help="held-out clips at full size")
  p.add_argument("--studies", type=int, default=10_000, help="held-out studies at full size")
  p.add_argument("--baseline_videos", type=int, default=20_000,
                 help="clips where both paths run (the NumPy path's memory grows with N x S)")
  p.add_argument("--baseline_studies", type=int, default=2_000, help="studies at that size")
  p.add_argument("--dim", type=int, default=512, help="embedding size")
  p.add_argument("--no-write", dest="write", action="store_false",
                 help="print only; do not update benchmarks/RESULTS.md")
  p.add_argument("--worker", nargs=4, metavar=("KIND", "N", "S", "D"), help=argparse.SUPPRESS)
  args = p.parse_args()
  if args.worker:
    kind, n, s, d = args.worker
    print("RESULT " + json.dumps(worker(kind, int(n), int(s), int(d))))
    return
  here = os.path.abspath(__file__)
  small = (args.baseline_videos, args.baseline_studies)
  rows = []
  for n, s in (small, (args.videos, args.studies)):
    kinds = ("numpy", "jax") if (n, s) == small else ("jax",)
    for kind in kinds:
      r = spawn(here, [kind, str(n), str(s), str(args.dim)])
      rows.append((n, s, kind, r))
      print(n, s, kind, r, flush=True)
  base = {(n, s): r for n, s, k, r in rows if k == "numpy"}
  lines = [f"### Evaluation recall: chunked on-device vs NumPy argsort "
           f"({datetime.date.today()}, {cpu_name()}, 2 cores)", "",
           f"{args.dim}-d embeddings, videos near their study's report; R@10 both directions.", "",
           "| videos x studies | path | seconds | peak RSS MB | video->report R@10 | "
           "report->video R@10 | speed-up |", "|---|---|---|---|---|---|---|"]
  for n, s, kind, r in rows:
    b = base.get((n, s))
    speed = f"**{b['seconds'] / r['seconds']:.1f}x**" if b and kind == "jax" else ""
    lines.append(f"| {n:,} x {s:,} | {kind} | {r['seconds']:.1f} | {r['rss_mb']:.0f} | "
                 f"{r['v2r']:.4f} | {r['r2v']:.4f} | {speed} |")
  lines += ["", "Reproduce: `python benchmarks/recall.py`."]
  publish("recall", lines, args.write)


if __name__ == "__main__":
  main()
