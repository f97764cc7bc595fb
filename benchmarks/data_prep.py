"""Data-prep throughput per worker: our conversion path vs the naive one, measured in one run.

  python benchmarks/data_prep.py                 # prints the table, updates benchmarks/RESULTS.md
  python benchmarks/data_prep.py --studies 4 --no-write

Our path (per video, one process): `data_prep.convert.convert_video` = streamed decode, sector
geometry from 32 frames, masking, square crop, resize to 224, JPEG-encode every frame.
Naive path (what the released preprocessing does): `pydicom.dcmread(path).pixel_array` of the
whole file, per-frame float conversion, centre crop, OpenCV resize to 224 (no encoding).
Both run on the same synthetic archive; videos/s, input MB/s and output bytes per video are
reported, plus peak RSS of each path on one large clip (in separate processes).
Needs opencv-python-headless (requirements-dev.txt).
"""

from __future__ import annotations

import argparse
import datetime
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks.common import peak_rss_mb, publish  # noqa: E402


from data_prep import convert, dicom_reader, dicom_writer, synthetic  # noqa: E402


def naive(path: str, size: int = 224) -> int:
  """The released pipeline's shape of work; returns bytes of the float output."""
  import cv2
  import pydicom
  video = pydicom.dcmread(path).pixel_array
  if video.ndim == 3 and video.shape[-1] != 3:  # (T, H, W) grayscale
    video = video[..., None].repeat(3, -1)
  elif video.ndim == 3:  # a single RGB frame
    video = video[None]
  out = []
  for frame in video:
    frame = frame.astype(np.float32)
    h, w = frame.shape[:2]
    side = min(h, w)
    frame = frame[(h - side) // 2:(h + side) // 2, (w - side) // 2:(w + side) // 2]
    out.append(cv2.resize(frame, (size, size), interpolation=cv2.INTER_CUBIC))
  return int(np.stack(out).nbytes)


def ours(path: str, opts: convert.Options) -> int:
  row = {"video_id": "v", "study_id": "s", "patient_id": "p", "split": "train"}
  record, extra = convert.convert_video(path, row, opts)
  return extra["bytes"]


def _time_all(fn, paths) -> tuple[dict[str, float], int]:
  """({path: seconds}, total output bytes) for fn over paths."""
  times, out_bytes = {}, 0
  for path in paths:
    t = time.perf_counter()
    out_bytes += fn(path)
    times[path] = time.perf_counter() - t
  return times, out_bytes


_SYNTAX_NAMES = {"1.2.840.10008.1.2.4.50": "JPEG baseline", "1.2.840.10008.1.2.5": "RLE",
                 "1.2.840.10008.1.2.1": "uncompressed"}


def rss_worker(which: str, path: str) -> None:
  if which == "ours":
    ours(path, convert.Options())
  else:
    naive(path)
  print("RSS", peak_rss_mb())


def _rss(which: str, path: str) -> float:
  out = subprocess.run([sys.executable, __file__, "--rss-worker", which, path],
                       capture_output=True, text=True, cwd=ROOT)
  lines = [l for l in out.stdout.splitlines() if l.startswith("RSS")]
  if out.returncode or not lines:
    raise RuntimeError(out.stderr[-2000:])
  return float(lines[-1].split()[1])


def _measure(tmp: str, size: tuple[int, int], args) -> dict:
  """Times both paths on a synthetic archive of `size` frames; best of args.rounds."""
  root = os.path.join(tmp, f"{size[0]}x{size[1]}")
  synthetic.write_archive(root, args.studies, seed=0, frames=args.frames, size=size,
                          still_fraction=0.0, progress=False)
  paths = sorted(os.path.join(r, n) for r, _, ns in os.walk(os.path.join(root, "dicom"))
                 for n in ns)
  opts = convert.Options()
  rounds = {"ours": [], "naive": []}
  for _ in range(args.rounds):  # alternate, so drift hits both paths alike
    t, ours_bytes = _time_all(lambda x: ours(x, opts), paths)
    rounds["ours"].append(t)
    t, naive_bytes = _time_all(naive, paths)
    rounds["naive"].append(t)
  best = {k: {p: min(r[p] for r in v) for p in paths} for k, v in rounds.items()}
  syntax = {p: _SYNTAX_NAMES.get(dicom_reader.read_info(p).transfer_syntax, "other")
            for p in paths}
  by_syntax = {}
  for p in paths:
    entry = by_syntax.setdefault(syntax[p], {"n": 0, "ours": 0.0, "naive": 0.0})
    entry["n"] += 1
    entry["ours"] += best["ours"][p]
    entry["naive"] += best["naive"][p]
  return {"n": len(paths), "in_mb": sum(os.path.getsize(x) for x in paths) / 1e6,
          "raw_bytes": sum(dicom_reader.read_info(x).num_frames * size[0] * size[1] * 3
                           for x in paths),
          "ours": sum(best["ours"].values()), "naive": sum(best["naive"].values()),
          "ours_bytes": ours_bytes, "naive_bytes": naive_bytes, "by_syntax": by_syntax}


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--studies", type=int, default=8, help="synthetic studies per size (default 8)")
  p.add_argument("--frames", type=int, default=48, help="frames per clip (default 48)")
  p.add_argument("--sizes", default="600x800,480x640",
                 help="source frame sizes HxW, comma-separated (default 600x800,480x640: a "
                 "common cart export size and a small one)")
  p.add_argument("--rounds", type=int, default=2, help="alternating timing rounds (default 2)")
  p.add_argument("--large-frames", type=int, default=300,
                 help="frames of the 768x1024 RGB clip used for peak RSS (default 300)")
  p.add_argument("--no-write", action="store_true", help="do not update benchmarks/RESULTS.md")
  p.add_argument("--rss-worker", nargs=2, help=argparse.SUPPRESS)
  args = p.parse_args()
  if args.rss_worker:
    rss_worker(*args.rss_worker)
    return
  sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",")]

  with tempfile.TemporaryDirectory() as tmp:
    results = {size: _measure(tmp, size, args) for size in sizes}
    big = os.path.join(tmp, "large.dcm")
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (768, 1024, 3), dtype=np.uint8)
    # moving speckle inside a phased-array fan (a clip without one is rejected, not converted)
    yy, xx = np.mgrid[:768, :1024]
    fan = ((np.hypot(xx - 512, yy) < 740) & (np.abs(np.arctan2(xx - 512, yy)) < 0.7))[..., None]
    frames = np.stack([np.roll(base, 3 * i, axis=1) * fan for i in range(args.large_frames)])
    dicom_writer.write_us_dicom(big, frames, "jpeg_baseline", fps=30.0)
    decoded_mb = frames.nbytes / 1e6
    del frames
    rss = {k: _rss(k, big) for k in ("ours", "naive")}

  lines = [
      f"### Data prep per worker ({datetime.date.today().isoformat()}, {os.cpu_count()} cores, "
      "one process)",
      "",
      f"Synthetic clips of {args.frames} frames, mixed JPEG baseline YBR_FULL_422 / RLE RGB / "
      f"uncompressed RGB / MONOCHROME2, {args.studies} studies per size; best of {args.rounds} "
      "rounds (per clip). Ours = decode, sector mask, crop, resize 224, JPEG q90 per frame; naive = "
      "`pixel_array`, float, centre crop, cv2 resize (no encoding).",
      "",
      "| source frames | clips (MB) | ours videos/s | ours MB/s | naive videos/s | naive MB/s "
      "| ours vs naive | output per video (raw source) |",
      "|---|---|---|---|---|---|---|---|",
  ]
  for (h, w), r in results.items():
    n = r["n"]
    lines.append(
        f"| {h}x{w} | {n} ({r['in_mb']:.0f}) | {n / r['ours']:.2f} | {r['in_mb'] / r['ours']:.1f} "
        f"| {n / r['naive']:.2f} | {r['in_mb'] / r['naive']:.1f} | **{r['naive'] / r['ours']:.2f}x** "
        f"| {r['ours_bytes'] / n / 1e3:.0f} KB ({r['raw_bytes'] / n / 1e6:.1f} MB) |")
  lines += ["", "By encoding (seconds per clip, best of rounds):", "",
            "| source frames | encoding | clips | ours s/clip | naive s/clip | ours vs naive |",
            "|---|---|---|---|---|---|"]
  for (h, w), r in results.items():
    for name, e in sorted(r["by_syntax"].items()):
      lines.append(f"| {h}x{w} | {name} | {e['n']} | {e['ours'] / e['n']:.3f} | "
                   f"{e['naive'] / e['n']:.3f} | {e['naive'] / e['ours']:.2f}x |")
  lines += [
      "",
      f"Peak RSS on one {args.large_frames}-frame 768x1024 RGB JPEG clip ({decoded_mb:.0f} MB "
      f"decoded): ours {rss['ours']:.0f} MB, naive {rss['naive']:.0f} MB.",
      "",
      "Reproduce: `python benchmarks/data_prep.py`.",
  ]
  publish("data_prep", lines, write=not args.no_write)


if __name__ == "__main__":
  main()
