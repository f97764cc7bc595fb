"""The demo's summary: every figure on the held-out studies with its 95% interval over them,
judged against its baseline (summary.md / summary.json), and its charts (plots/)."""

from __future__ import annotations

import dataclasses
import csv
import json
import os
import shutil

import numpy as np

from echoprime_jax.inference import split_export as files
from echoprime_jax.run.folder import RunFolder


@dataclasses.dataclass(frozen=True)
class Figure:
  """One line of the summary: a figure on the held-out studies, its 95% bootstrap interval
  over them, and the baseline it must beat."""
  what: str
  value: float
  interval: tuple[float, float]
  baseline: float
  baseline_name: str
  higher_is_better: bool
  judged: bool = True  # False: shown for reference, no "beats it" (see figures_table)

  @property
  def beats(self) -> bool:
    """The whole interval is on the better side of the baseline."""
    lo, hi = self.interval
    return lo > self.baseline if self.higher_is_better else hi < self.baseline


def figures_table(d) -> list[Figure]:
  """Every figure of the summary with its 95% interval over the held-out studies, measured
  from the stages' files (each study's outcome; `evaluation.bootstrap`)."""
  import pyarrow.parquet as pq
  from echoprime_jax.evaluation import bootstrap
  from echoprime_jax.evaluation.retrieval_figures import own_rank
  rows: list[Figure] = []

  def add(what, outcomes, groups, baseline, baseline_name, higher=True, judged=True):
    rows.append(Figure(what, float(np.nanmean(outcomes)),
                       bootstrap.mean_interval(outcomes, groups), float(baseline),
                       baseline_name, higher, judged))

  # study -> report retrieval with the pretrained towers (the export's held-out studies)
  has_report = np.asarray(pq.read_table(d.path("export", files.STUDIES))
                          .column("has_report").to_pylist())
  study = np.load(d.path("export", files.STUDY_MEAN))[has_report]
  report = np.load(d.path("export", files.REPORT_EMBEDDINGS))[has_report]
  rank = own_rank(study @ report.T)
  for k in (5, 10):
    add(f"study->report retrieval R@{k}", rank < k, None, min(k / len(rank), 1.0), "chance")
  # R@1 asks for the one report (of ~80) whose EF figure matches to the percent: at this size
  # its interval is as wide as the figure itself, so it is shown, not judged
  add("study->report retrieval R@1", rank < 1, None, 1 / len(rank), "chance", judged=False)
  # views: every held-out video, resampled by study
  videos = pq.read_table(d.path("export", files.VIDEOS)).to_pydict()
  labelled = np.asarray([v != "" for v in videos["view"]])
  correct = np.asarray([p == t for p, t in zip(videos["predicted_view"], videos["view"])])
  truth = np.asarray(videos["view"])[labelled]
  majority = max(np.unique(truth, return_counts=True)[1]) / len(truth)
  add("view classification accuracy", correct[labelled],
      np.asarray(videos["study_id"])[labelled], majority, "majority view")
  # MIL: every (study, section) query, resampled by study
  q = np.load(RunFolder(d.path("mil")).section_ranks("val"))
  uniform = np.load(RunFolder(d.path("mil_uniform")).section_ranks("val"))
  add("MIL section retrieval R@1", q["rank"] < 1, q["study"], np.mean(q["uniform_rank"] < 1),
      "uniform pooling")
  # the ablation: uniform pooling with the projection trained as MIL's is (README: why the
  # two are close on this archive)
  add("MIL section retrieval R@1, attention fixed uniform", uniform["rank"] < 1,
      uniform["study"], np.mean(q["rank"] < 1), "learned attention", judged=False)
  # the candidate database: one query per held-out study
  with open(d.path("retrieval_queries.csv")) as f:
    table = list(csv.DictReader(f))
  per_study = {k: np.asarray([float(r[k]) for r in table]) for k in table[0] if k != "study_id"}
  for name, label in (("pericardial_effusion", "pericardial effusion grade"),
                      ("left_atrium_dilation", "left-atrial dilation grade")):
    key = f"report/{name}_accuracy"
    add(f"retrieved report states the {label}", per_study[key], None,
        np.nanmean(per_study[f"random_{key}"]), "random neighbours")
  add("retrieved report states the LVEF band", per_study["report/lvef_band_accuracy"], None,
      np.nanmean(per_study["random_report/lvef_band_accuracy"]), "random neighbours")
  add(f"LVEF from {d.s.k} retrieved neighbours, MAE", per_study["knn/lvef_mae"], None,
      np.nanmean(per_study["mean_baseline/lvef_mae"]), "candidates' mean", higher=False)
  # probes: their own out-of-fold predictions, bootstrapped by the probe over studies
  p = d.figures["probes"]
  lvef, atrium = p["lvef"]["study_mean"], p["left_atrium_dilated"]["study_mean"]
  rows.append(Figure("LVEF probe MAE (study mean, linear)", lvef["linear"]["mae"],
                     tuple(lvef["linear"]["mae_ci"]), lvef["baseline"]["mae"],
                     "predict the mean", False))
  rows.append(Figure("left-atrial dilation probe AUC (study mean, linear)",
                     atrium["linear"]["auc"], tuple(atrium["linear"]["auc_ci"]), 0.5,
                     "chance", True))
  return rows

def summary(d) -> dict:
  rows = figures_table(d)
  held_out = len(np.load(d.path("export", files.STUDY_MEAN)))
  cell = lambda r: f"{r.value:.3f} [{r.interval[0]:.3f}, {r.interval[1]:.3f}]"  # noqa: E731
  lines = [f"Figures on {held_out} held-out studies; [95% bootstrap interval over them]. A "
           "figure beats its baseline when the whole interval is on the better side.", "",
           "| figure | value [95% interval] | baseline | beats it |", "|---|---|---|---|"]
  for r in rows:
    if r.judged:
      lines.append(f"| {r.what} | {cell(r)} | {r.baseline:.3f} ({r.baseline_name}) | "
                   f"{'yes' if r.beats else 'NO'} |")
  lines += ["", "Also measured (not judged):", "",
            "| figure | value [95% interval] | for reference |", "|---|---|---|"]
  lines += [f"| {r.what} | {cell(r)} | {r.baseline:.3f} ({r.baseline_name}) |"
            for r in rows if not r.judged]
  i = d.figures["interpret"]
  lines += ["", f"Held-out study interpreted ({i['videos']} videos): LVEF {i['true_lvef']:.0f} "
            f"true, {i['predicted_lvef']:.1f} predicted; pericardial effusion "
            f"{i['true_pericardial_effusion']} true, {i['predicted_pericardial_effusion']} "
            f"predicted. Page: {d.path('interpret', 'report.html')}"]
  text = "\n".join(lines)
  print("\n" + text)
  write_atomically(d.path("summary.md"), text + "\n")
  out = {"held_out_studies": held_out,
         "rows": [{"figure": r.what, "value": r.value, "interval": list(r.interval),
                   "baseline": r.baseline, "baseline_name": r.baseline_name,
                   "higher_is_better": r.higher_is_better, "judged": r.judged,
                   "beats_baseline": r.beats} for r in rows],
         "stages": d.figures, "settings": dataclasses.asdict(d.s)}
  write_atomically(d.path("summary.json"), json.dumps(out, indent=2))
  return out

def plots(d) -> None:
  from echoprime_jax.render import charts
  os.makedirs(d.path("plots"), exist_ok=True)
  rows = metrics_rows(RunFolder(d.path("pretrain")).metrics)
  train = [r for r in rows if "loss" in r]
  charts.line_chart({"training loss": ([r["step"] for r in train], [r["loss"] for r in train])},
                   d.path("plots", "pretrain_loss.png"), "pretraining: contrastive loss",
                   xlabel="training step", ylabel="contrastive loss")
  val = [r for r in rows if "val/study_to_report_R@10" in r]
  steps = [r["step"] for r in val]
  charts.line_chart({"val R@10": (steps, [r["val/study_to_report_R@10"] for r in val]),
                    "val R@1": (steps, [r["val/study_to_report_R@1"] for r in val]),
                    "chance R@10": (steps, [r["val/chance_R@10"] for r in val])},
                   d.path("plots", "pretrain_recall.png"),
                   "pretraining: study->report retrieval on held-out studies",
                   xlabel="training step", ylabel="recall (fraction of held-out studies)",
                   dashed=("chance R@10",))
  mil = [r for r in metrics_rows(RunFolder(d.path("mil")).metrics) if "val/section_R@1" in r]
  steps = [r["step"] for r in mil]
  charts.line_chart({"section R@1": (steps, [r["val/section_R@1"] for r in mil]),
                    "uniform pooling": (steps, [r["val/uniform_section_R@1"] for r in mil])},
                   d.path("plots", "mil_recall.png"), "MIL: held-out section retrieval",
                   xlabel="training step", ylabel="section R@1", dashed=("uniform pooling",))
  folder = RunFolder(d.path("views")).artefact("confusion")
  confusion = sorted((f for f in os.listdir(folder)
                      if f.startswith("step_") and f.endswith(".png")),
                     key=lambda f: int(f[5:-4]))
  if confusion:
    shutil.copyfile(os.path.join(folder, confusion[-1]),
                    d.path("plots", "views_confusion.png"))


def last_eval(d, stage: str) -> dict:
  """The stage's last validation metrics (from its metrics.jsonl: also right when a finished
  run was resumed and had nothing left to do)."""
  rows = [r for r in metrics_rows(RunFolder(d.path(stage)).metrics)
          if any(k.startswith("val/") for k in r)]
  if not rows:
    raise RuntimeError(f"{d.path(stage)}: no validation metrics were logged")
  return {k[4:]: v for k, v in rows[-1].items() if k.startswith("val/")}


def write_atomically(path: str, text: str) -> None:
  """A reader never sees half a file: written to a temporary sibling, then renamed."""
  with open(path + ".tmp", "w") as f:
    f.write(text)
  os.replace(path + ".tmp", path)


def pick(metrics: dict, *keys: str) -> dict:
  missing = [k for k in keys if k not in metrics]
  if missing:
    raise RuntimeError(f"the stage's last evaluation lacks {missing}")
  return {k: float(metrics[k]) for k in keys}


def metrics_rows(path: str) -> list[dict]:
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]
