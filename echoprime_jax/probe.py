"""Probe exported embeddings for a target: KNN and linear, cross-validated by patient; the
pooling ablation; zero-shot classification from text prompts.

  python -m echoprime_jax.probe --export runs/export --data shards64 --labels rules --target lvef
  python -m echoprime_jax.probe --export runs/export --labels my_labels.csv --target amyloid
  python -m echoprime_jax.probe --export runs/export --data shards64 --labels rules \
      --target pericardial_effusion --ablation --zero_shot

--export: a folder from `python -m echoprime_jax.export`. --embedding picks the level:
single_frame (one video's frame 0 held still), single_video (one video: its first A4C),
study_mean (mean of the videos), study_sections (the 15 MIL section embeddings, concatenated),
report (the text tower on the report: an upper reference, not an imaging result).
--ablation probes the four imaging levels side by side (the paper's comparison of pooling
levels, on your data); --zero_shot adds CLIP-style zero-shot scores of the study-mean
embeddings against per-class prompts (`zero_shot.py`; the towers named in the export's
export.json embed the prompts).
--labels: a CSV or Parquet with a study_id column (the shards' pseudonyms) and the target
column, or `rules` to extract the built-in report labels (`retrieval/label_rules.json`) from
the shards' reports (needs --data). Patients: from --data (the shards' patient pseudonyms),
else a patient_id column of the labels file, else each study is its own patient (a warning).
Writes OUT/<target>_<embedding>.json (metrics with bootstrap 95% intervals, KNN and linear vs
the training-mean / prevalence baseline), a predictions CSV and a scatter (regression) or ROC
(binary) PNG per level, and with --ablation / --zero_shot OUT/<target>_summary.json. See
`echoprime_jax/probes.py`.
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
EMBEDDINGS = {"single_frame": "single_frame.npy", "single_video": "single_video.npy",
              "study_mean": "study_mean.npy", "study_sections": "study_sections.npy",
              "report": "report_embeddings.npy"}
ABLATION = ("single_frame", "single_video", "study_mean", "study_sections")


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


def load_embedding(export: str, embedding: str) -> np.ndarray:
  """(M, D') the export's `embedding` level, one row per study (sections concatenated)."""
  path = os.path.join(export, EMBEDDINGS[embedding])
  if not os.path.isfile(path):
    raise SystemExit(f"{path}: not in the export (study_sections needs export --mil/--table; "
                     "single_frame / single_video need a current export)")
  x = np.load(path)
  return x.reshape(len(x), -1)


def load_inputs(args) -> tuple[np.ndarray, np.ndarray, list[str]]:
  """-> (y (N,), patient groups (N,), study ids) for the export's studies."""
  import pyarrow.parquet as pq
  studies = pq.read_table(os.path.join(args.export, "studies.parquet")).to_pydict()["study_id"]
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
  return y, groups, list(studies)


def _plot(result: dict, path: str, title: str) -> None:
  """The linear probe's out-of-fold predictions: true vs predicted (regression) or its ROC
  (binary), drawn by `plots` (matplotlib, imported only here)."""
  from echoprime_jax import plots
  y, pred, linear = result["predictions"]["y"], result["predictions"]["linear"], result["linear"]
  if result["kind"] == "regression":
    plots.scatter_chart(y, pred, path, f"{title}: linear probe, out-of-fold")
  else:
    plots.roc_chart(y, pred, path, f"{title}: ROC of the linear probe", linear["auc"],
                    linear.get("auc_ci"))


def probe_level(args, embedding: str, y, groups, studies, kind: str, out: str) -> dict:
  """One embedding level: probes, JSON, predictions CSV, plot; prints the lines; -> summary."""
  from echoprime_jax import probes
  result = probes.probe(load_embedding(args.export, embedding), y, groups, kind,
                        folds=args.folds, k=args.k, bootstraps=args.bootstraps)
  stem = os.path.join(out, f"{args.target}_{embedding}")
  summary = {k: v for k, v in result.items() if k != "predictions"}
  summary.update(target=args.target, embedding=embedding)
  with open(stem + ".json", "w") as f:
    json.dump(summary, f, indent=2)
  keep = [s for s, v in zip(studies, y) if not np.isnan(v)]
  with open(stem + "_predictions.csv", "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["study_id", "y", "knn", "linear", "baseline"])
    pr = result["predictions"]
    for i, s in enumerate(keep):
      w.writerow([s, pr["y"][i], pr["knn"][i], pr["linear"][i], pr["baseline"][i]])
  _plot(result, stem + ".png", f"{args.target} ({embedding})")
  metric = "mae" if kind == "regression" else "auc"
  for name in ("knn", "linear", "baseline"):
    m = result[name]
    ci = m.get(f"{metric}_ci", (float("nan"), float("nan")))
    print(f"{args.target} ({embedding}, {kind}, n={result['n']}) {name:>8}: "
          f"{metric} {m[metric]:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]")
  return summary


def zero_shot_level(args, y, kind: str) -> dict:
  """Zero-shot on the study-mean video embeddings with the export's towers and the prompts."""
  import jax

  from echoprime_jax import embeddings, parallel, zero_shot
  from echoprime_jax.train import frozen_towers
  prompts = zero_shot.load_prompts(args.prompts)
  if args.target not in prompts:
    raise SystemExit(f"{args.prompts}: no prompts for {args.target!r} (has {sorted(prompts)})")
  with open(os.path.join(args.export, "export.json")) as f:
    towers_run = json.load(f)["towers"]
  mesh = parallel.make_mesh({"data": -1})
  towers = frozen_towers.from_pretrain_run(towers_run, 128, mesh)
  spec = prompts[args.target]
  n_dev = jax.device_count()
  classes = zero_shot.class_embeddings(
      spec, towers.encoder,
      lambda ids, mask: embeddings.embed_texts(towers.model, ids, mask, batch_size=n_dev,
                                               mesh=mesh))
  scale = float(np.exp(np.asarray(towers.model.log_scale[...])))
  _, prediction = zero_shot.predict(load_embedding(args.export, "study_mean"), classes,
                                    spec["values"], scale)
  result = zero_shot.evaluate(prediction, y, kind == "binary")
  result.update(prompts=os.path.abspath(args.prompts), scale=scale)
  metric = "mae" if kind == "regression" else "auc"
  extra = (f" (predict-the-mean {result['mean_baseline_mae']:.3f})" if kind == "regression"
           else "")
  print(f"{args.target} (study_mean, {kind}, n={result['n']}) zero-shot: {metric} "
        f"{result[metric]:.3f}{extra}")
  return result


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
  p.add_argument("--ablation", action="store_true",
                 help="probe every pooling level the export has (single_frame, single_video, "
                      "study_mean, study_sections) and print them side by side")
  p.add_argument("--zero_shot", action="store_true",
                 help="also classify zero-shot: study-mean embeddings against the text "
                      "tower's embeddings of per-class prompts (--prompts)")
  from echoprime_jax.zero_shot import DEFAULT_PROMPTS
  p.add_argument("--prompts", default=DEFAULT_PROMPTS,
                 help="zero-shot prompt file (JSON; default: the built-in prompts, "
                      "echoprime_jax/zero_shot_prompts.json)")
  p.add_argument("--kind", default="auto", choices=("auto", "regression", "binary"),
                 help="auto: binary when the target is 0/1, else regression")
  p.add_argument("--folds", type=int, default=5, help="cross-validation folds by patient (5)")
  p.add_argument("--k", type=int, default=10, help="neighbours of the KNN probe (10)")
  p.add_argument("--bootstraps", type=int, default=1000, help="bootstrap resamples (1000)")
  p.add_argument("--out", default="", help="output folder (default: EXPORT/probes)")
  args = p.parse_args(argv)
  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
  logging.getLogger("absl").setLevel(logging.WARNING)
  y, groups, studies = load_inputs(args)
  known = y[~np.isnan(y)]
  kind = args.kind
  if kind == "auto":
    kind = "binary" if len(known) and set(np.unique(known)) <= {0.0, 1.0} else "regression"
  out = args.out or os.path.join(args.export, "probes")
  os.makedirs(out, exist_ok=True)
  levels = ([e for e in ABLATION if os.path.isfile(os.path.join(args.export, EMBEDDINGS[e]))]
            if args.ablation else [args.embedding])
  results = {e: probe_level(args, e, y, groups, studies, kind, out) for e in levels}
  if args.zero_shot:
    results["zero_shot"] = zero_shot_level(args, y, kind)
  if args.ablation or args.zero_shot:
    metric = "mae" if kind == "regression" else "auc"
    print(f"\n{args.target}: {metric} by level (linear / KNN probe; baseline "
          f"{results[levels[0]]['baseline'][metric]:.3f})")
    for e in levels:
      r = results[e]
      print(f"  {e:<16} linear {r['linear'][metric]:.3f}   knn {r['knn'][metric]:.3f}")
    if "zero_shot" in results:
      print(f"  {'zero-shot':<16} {results['zero_shot'][metric]:.3f}")
    with open(os.path.join(out, f"{args.target}_summary.json"), "w") as f:
      json.dump(results, f, indent=2)
  return 0


if __name__ == "__main__":
  sys.exit(main())
