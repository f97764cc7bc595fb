"""Probe exported embeddings for a target: KNN and linear, cross-validated by patient.

  python -m echoprime_jax.probe --export runs/export --data shards64 --labels rules --target lvef
  python -m echoprime_jax.probe --export runs/export --labels my_labels.csv --target amyloid

--export: a folder from `python -m echoprime_jax.export`. --embedding picks the level:
study_mean (mean of the videos), study_sections (the 15 MIL section embeddings, concatenated),
report (the text tower on the report: an upper reference, not an imaging result).
--labels: a CSV or Parquet with a study_id column (the shards' pseudonyms) and the target
column, or `rules` to extract the built-in report labels (`retrieval/label_rules.json`) from
the shards' reports (needs --data). Patients: from --data (the shards' patient pseudonyms),
else a patient_id column of the labels file, else each study is its own patient (a warning).
Writes OUT/<target>_<embedding>.json (metrics with bootstrap 95% intervals, KNN and linear vs
the training-mean / prevalence baseline), a predictions CSV and a scatter (regression) or ROC
(binary) PNG. See `echoprime_jax/probes.py`.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import sys

import numpy as np

log = logging.getLogger("echoprime_jax.probe")
EMBEDDINGS = {"study_mean": "study_mean.npy", "study_sections": "study_sections.npy",
              "report": "report_embeddings.npy"}


def _read_table(path: str) -> dict[str, list]:
  if path.endswith(".parquet"):
    import pyarrow.parquet as pq
    return pq.read_table(path).to_pydict()
  with open(path, newline="") as f:
    rows = list(csv.DictReader(f))
  if not rows:
    raise SystemExit(f"{path}: no rows")
  return {k: [r[k] for r in rows] for k in rows[0]}


def _number(v) -> float:
  try:
    return float(v)
  except (TypeError, ValueError):
    return float("nan")


def load_inputs(args) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
  """-> (X (N, D), y (N,), patient groups (N,), study ids) for the export's studies."""
  import pyarrow.parquet as pq
  studies = pq.read_table(os.path.join(args.export, "studies.parquet")).to_pydict()["study_id"]
  path = os.path.join(args.export, EMBEDDINGS[args.embedding])
  if not os.path.isfile(path):
    raise SystemExit(f"{path}: not in the export (study_sections needs export --mil/--table)")
  x = np.load(path)
  x = x.reshape(len(x), -1)
  shards = None
  if args.data:
    shards = pq.read_table(os.path.join(args.data, "studies.parquet")).to_pydict()
  if args.labels == "rules":
    if shards is None:
      raise SystemExit("--labels rules reads the reports from the shards: pass --data")
    from echoprime_jax.retrieval import labels as labels_lib
    rules = labels_lib.load_rules()
    if args.target not in rules.names:
      raise SystemExit(f"--target {args.target!r} is not a rule label: {rules.names}")
    values = {sid: rules.extract(json.loads(sec or "{}"))[args.target]
              for sid, sec in zip(shards["study_id"], shards["sections"])}
  else:
    table = _read_table(args.labels)
    if "study_id" not in table or args.target not in table:
      raise SystemExit(f"{args.labels}: needs the columns study_id and {args.target!r}")
    values = {str(s): _number(v) for s, v in zip(table["study_id"], table[args.target])}
  y = np.asarray([values.get(s, np.nan) for s in studies], np.float64)
  if shards is not None:
    patient = dict(zip(shards["study_id"], shards["patient_id"]))
  elif args.labels != "rules" and "patient_id" in table:
    patient = dict(zip(map(str, table["study_id"]), map(str, table["patient_id"])))
  else:
    log.warning("no patient ids (--data or a patient_id column): each study is its own "
                "patient, so folds may share patients")
    patient = {s: s for s in studies}
  groups = np.asarray([patient.get(s, s) for s in studies])
  return x, y, groups, list(studies)


def _plot(result: dict, path: str, title: str) -> None:
  from PIL import Image, ImageDraw
  size, pad = 420, 40
  img = Image.new("RGB", (size, size), "white")
  draw = ImageDraw.Draw(img)
  draw.rectangle([pad, pad, size - pad, size - pad], outline="black")
  y, pred = result["predictions"]["y"], result["predictions"]["linear"]

  def to_px(u, v):  # u, v in [0, 1]
    return pad + u * (size - 2 * pad), size - pad - v * (size - 2 * pad)

  if result["kind"] == "regression":
    lo, hi = float(min(y.min(), pred.min())), float(max(y.max(), pred.max()))
    span = max(hi - lo, 1e-9)
    draw.line([to_px(0, 0), to_px(1, 1)], fill=(180, 180, 180))
    for a, b in zip(y, pred):
      px, py = to_px((a - lo) / span, (b - lo) / span)
      draw.ellipse([px - 2, py - 2, px + 2, py + 2], fill=(40, 90, 200))
    draw.text((pad, 8), f"{title}: linear probe, true (x) vs predicted (y)", fill="black")
  else:
    order = np.argsort(-pred)
    tp = np.cumsum(y[order] == 1) / max((y == 1).sum(), 1)
    fp = np.cumsum(y[order] == 0) / max((y == 0).sum(), 1)
    draw.line([to_px(0, 0), to_px(1, 1)], fill=(180, 180, 180))
    draw.line([to_px(0, 0)] + [to_px(a, b) for a, b in zip(fp, tp)], fill=(40, 90, 200), width=2)
    draw.text((pad, 8), f"{title}: ROC of the linear probe (AUC {result['linear']['auc']:.3f})",
              fill="black")
  img.save(path)


def main(argv: list[str] | None = None) -> int:
  p = argparse.ArgumentParser(prog="python -m echoprime_jax.probe", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--export", required=True, help="folder from python -m echoprime_jax.export")
  p.add_argument("--labels", required=True,
                 help="CSV / Parquet with study_id + target, or 'rules' (report labels)")
  p.add_argument("--target", required=True, help="the label column / rule name to probe")
  p.add_argument("--data", default="", help="the shards folder (patients; reports for rules)")
  p.add_argument("--embedding", default="study_mean", choices=tuple(EMBEDDINGS),
                 help="which embedding level to probe (default study_mean)")
  p.add_argument("--kind", default="auto", choices=("auto", "regression", "binary"),
                 help="auto: binary when the target is 0/1, else regression")
  p.add_argument("--folds", type=int, default=5, help="cross-validation folds by patient (5)")
  p.add_argument("--k", type=int, default=10, help="neighbours of the KNN probe (10)")
  p.add_argument("--bootstraps", type=int, default=1000, help="bootstrap resamples (1000)")
  p.add_argument("--out", default="", help="output folder (default: EXPORT/probes)")
  args = p.parse_args(argv)
  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
  from echoprime_jax import probes
  x, y, groups, studies = load_inputs(args)
  known = y[~np.isnan(y)]
  kind = args.kind
  if kind == "auto":
    kind = "binary" if len(known) and set(np.unique(known)) <= {0.0, 1.0} else "regression"
  result = probes.probe(x, y, groups, kind, folds=args.folds, k=args.k,
                        bootstraps=args.bootstraps)
  out = args.out or os.path.join(args.export, "probes")
  os.makedirs(out, exist_ok=True)
  stem = os.path.join(out, f"{args.target}_{args.embedding}")
  summary = {k: v for k, v in result.items() if k != "predictions"}
  summary.update(target=args.target, embedding=args.embedding)
  with open(stem + ".json", "w") as f:
    json.dump(summary, f, indent=2)
  keep = [s for s, v in zip(studies, y) if not np.isnan(v)]
  with open(stem + "_predictions.csv", "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["study_id", "y", "knn", "linear", "baseline"])
    pr = result["predictions"]
    for i, s in enumerate(keep):
      w.writerow([s, pr["y"][i], pr["knn"][i], pr["linear"][i], pr["baseline"][i]])
  _plot(result, stem + ".png", args.target)
  metric = "mae" if kind == "regression" else "auc"
  for name in ("knn", "linear", "baseline"):
    m = result[name]
    ci = m.get(f"{metric}_ci", (float("nan"), float("nan")))
    print(f"{args.target} ({args.embedding}, {kind}, n={result['n']}) {name:>8}: "
          f"{metric} {m[metric]:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]")
  return 0


if __name__ == "__main__":
  sys.exit(main())
