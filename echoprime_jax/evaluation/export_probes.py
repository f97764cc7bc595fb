"""Probe an export folder's embeddings for a target: KNN and linear probes cross-validated by
patient, the pooling ablation, zero-shot from text prompts (the library of
`python -m echoprime_jax.probe`, whose docstring describes the inputs and outputs).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import os
from typing import Callable

import numpy as np

from echoprime_jax.inference import split_export as files

log = logging.getLogger("echoprime_jax.probe")

EMBEDDINGS = {"single_frame": files.SINGLE_FRAME, "single_video": files.SINGLE_VIDEO,
              "study_mean": files.STUDY_MEAN, "study_sections": files.STUDY_SECTIONS,
              "report": files.REPORT_EMBEDDINGS}
ABLATION = ("single_frame", "single_video", "study_mean", "study_sections")


def _read_table(path: str) -> dict[str, list]:
  if path.endswith(".parquet"):
    import pyarrow.parquet as pq
    return pq.read_table(path).to_pydict()
  with open(path, newline="") as f:
    rows = list(csv.DictReader(f))
  if not rows:
    raise ValueError(f"{path}: no rows")
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
    raise ValueError(f"{path}: not in the export (study_sections needs export --mil/--table; "
                     "single_frame / single_video need a current export)")
  x = np.load(path)
  return x.reshape(len(x), -1)


def load_inputs(args) -> tuple[np.ndarray, np.ndarray, list[str]]:
  """-> (y (N,), patient groups (N,), study ids) for the export's studies."""
  import pyarrow.parquet as pq
  if not os.path.isfile(os.path.join(args.export, files.STUDIES)):
    raise FileNotFoundError(f"{args.export}: not an export folder (no {files.STUDIES}); make "
                            "one with python -m echoprime_jax.export")
  studies = pq.read_table(os.path.join(args.export, files.STUDIES)).to_pydict()["study_id"]
  shards = None
  if args.data:
    shards = pq.read_table(os.path.join(args.data, "studies.parquet")).to_pydict()
  if args.labels == "rules":
    if shards is None:
      raise ValueError("--labels rules reads the reports from the shards: pass --data")
    from echoprime_jax.retrieval import labels as labels_lib
    rules = labels_lib.load_rules()
    if args.target not in rules.names:
      raise ValueError(f"--target {args.target!r} is not a rule label: {rules.names}")
    values = {sid: rules.extract(json.loads(sec or "{}"))[args.target]
              for sid, sec in zip(shards["study_id"], shards["sections"])}
  else:
    table = _read_table(args.labels)
    if "study_id" not in table or args.target not in table:
      raise ValueError(f"{args.labels}: needs the columns study_id and {args.target!r}")
    values = {str(s): _number(v) for s, v in zip(table["study_id"], table[args.target])}
  y = np.asarray([values.get(s, np.nan) for s in studies], np.float64)
  if np.isnan(y).all():
    raise ValueError(f"{args.labels}: no study of the export has a {args.target!r} value (are "
                     "its study ids the shards' pseudonyms, as in the export?)")
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
  (binary), drawn by `render.charts` (matplotlib, imported only here)."""
  from echoprime_jax.render import charts
  y, pred, linear = result["predictions"]["y"], result["predictions"]["linear"], result["linear"]
  if result["kind"] == "regression":
    charts.scatter_chart(y, pred, path, f"{title}: linear probe, out-of-fold")
  else:
    charts.roc_chart(y, pred, path, f"{title}: ROC of the linear probe", linear["auc"],
                    linear.get("auc_ci"))


def probe_level(args, embedding: str, y, groups, studies, kind: str, out: str) -> dict:
  """One embedding level: probes, JSON, predictions CSV, plot; prints the lines; -> summary."""
  from echoprime_jax.evaluation import probes
  if args.train_export:  # the dataset's own split: fit on one export, score on the other
    y_tr, groups_tr, _ = load_inputs(dataclasses.replace(args, export=args.train_export))
    result = probes.probe_held_out(load_embedding(args.train_export, embedding), y_tr,
                                   groups_tr, load_embedding(args.export, embedding), y, groups,
                                   kind, k=args.k, bootstraps=args.bootstraps)
  else:
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
    args.say(f"{args.target} ({embedding}, {kind}, n={result['n']}) {name:>8}: "
          f"{metric} {m[metric]:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]")
  return summary


def zero_shot_level(args, y, kind: str) -> dict:
  """Zero-shot on the study-mean video embeddings with the export's towers and the prompts."""
  import jax

  from echoprime_jax import parallel
  from echoprime_jax.evaluation import zero_shot
  from echoprime_jax.inference import embeddings, frozen_towers
  prompt_file = args.prompts or zero_shot.DEFAULT_PROMPTS
  prompts = zero_shot.load_prompts(prompt_file)
  if args.target not in prompts:
    raise ValueError(f"{prompt_file}: no prompts for {args.target!r} (has {sorted(prompts)})")
  with open(os.path.join(args.export, files.MANIFEST)) as f:
    manifest = json.load(f)
  mesh = parallel.make_mesh({"data": -1})
  towers = frozen_towers.load(manifest["towers"], 128, mesh, manifest.get("tokenizer", ""))
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
  result.update(prompts=os.path.abspath(prompt_file), scale=scale)
  metric = "mae" if kind == "regression" else "auc"
  extra = (f" (predict-the-mean {result['mean_baseline_mae']:.3f})" if kind == "regression"
           else "")
  args.say(f"{args.target} (study_mean, {kind}, n={result['n']}) zero-shot: {metric} "
        f"{result[metric]:.3f}{extra}")
  return result


@dataclasses.dataclass(frozen=True)
class ProbeRequest:
  export: str  # folder from `python -m echoprime_jax.export`
  labels: str  # CSV / Parquet with study_id + target, or "rules"
  target: str
  data: str = ""  # the shards folder (patients; reports for rules)
  embedding: str = "study_mean"
  ablation: bool = False
  zero_shot: bool = False
  prompts: str = ""  # zero-shot prompt file ("" the built-in)
  kind: str = "auto"  # "auto", "regression" or "binary"
  folds: int = 5
  k: int = 10
  bootstraps: int = 1000
  out: str = ""  # default EXPORT/probes
  train_export: str = ""  # fit on this export (a training split), score on `export`
  say: Callable[[str], None] = print  # where the result lines go


def probe_export(req: ProbeRequest) -> dict:
  """Probes (and writes, see the module docstring) -> {level: summary, "zero_shot": ...}."""
  say = req.say
  y, groups, studies = load_inputs(req)
  known = y[~np.isnan(y)]
  kind = req.kind
  if kind == "auto":
    kind = "binary" if len(known) and set(np.unique(known)) <= {0.0, 1.0} else "regression"
  out = req.out or os.path.join(req.export, "probes")
  os.makedirs(out, exist_ok=True)
  levels = ([e for e in ABLATION if os.path.isfile(os.path.join(req.export, EMBEDDINGS[e]))]
            if req.ablation else [req.embedding])
  results = {e: probe_level(req, e, y, groups, studies, kind, out) for e in levels}
  if req.zero_shot:
    results["zero_shot"] = zero_shot_level(req, y, kind)
  if req.ablation or req.zero_shot:
    metric = "mae" if kind == "regression" else "auc"
    say(f"\n{req.target}: {metric} by level (linear / KNN probe; baseline "
          f"{results[levels[0]]['baseline'][metric]:.3f})")
    for e in levels:
      r = results[e]
      say(f"  {e:<16} linear {r['linear'][metric]:.3f}   knn {r['knn'][metric]:.3f}")
    if "zero_shot" in results:
      say(f"  {'zero-shot':<16} {results['zero_shot'][metric]:.3f}")
    with open(os.path.join(out, f"{req.target}_summary.json"), "w") as f:
      json.dump(results, f, indent=2)
  return results


