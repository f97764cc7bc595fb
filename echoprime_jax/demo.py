"""The whole system end to end on a synthetic archive, in one command.

  python -m echoprime_jax.demo --workdir runs/demo            # ~6 minutes on 2 CPU cores
  python -m echoprime_jax.demo --workdir runs/demo --quick    # half the steps (the CI test)

Stages, each writing a folder of WORKDIR (each is also a command of its own; the README shows
them on a real archive):
  archive    synthetic studies: multi-frame echo DICOMs (JPEG, RLE, RGB, grey; 11 views, stills
             mixed in), a free-text report each, and their ground truth   (data_prep.synthetic)
  shards     de-identified ArrayRecord shards at 64 px, split by patient   (data_prep.convert)
  pretrain   the tiny video-report CLIP                                    (configs/pretrain.py)
  views      the tiny 11-view classifier                                   (configs/views.py)
  mil        the anatomical-attention aggregator on the frozen towers      (configs/mil.py)
  mil_uniform  the same with attention fixed uniform (its projection trained): the ablation
  export     per-video / per-study / per-section embeddings, predicted views (export)
  database   the candidate database (train split) + retrieval evaluation (index build/evaluate)
  interpret  one held-out study: report, measurements, HTML page          (interpret)
  probes     LVEF (regression) and left-atrial dilation (binary) probes    (probe)
then prints the summary table and writes WORKDIR/summary.json, WORKDIR/summary.md and
WORKDIR/plots/ (loss and recall curves, the views' confusion matrix). Each figure is measured on
the held-out studies with a 95% bootstrap interval over them (`echoprime_jax.bootstrap`), and
"beats" its baseline only when the whole interval is on the better side. Nothing is selected
on the held-out studies: every stage uses its last step.

A stage whose outputs are complete (WORKDIR/.stages/<stage>.json, written last) is not run
again: a rerun after an interruption continues where it stopped; --fresh deletes WORKDIR's
stages first. The archive is synthetic, so the shards use the built-in insecure test key: never
use that key for real data (see data_prep.convert --key-file).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import io
import json
import logging
import os
import shutil
import sys
import time

import numpy as np

log = logging.getLogger("echoprime_jax.demo")


@dataclasses.dataclass(frozen=True)
class Settings:
  studies: int = 160
  frames: int = 32  # per synthetic clip: about one heart cycle at 25-50 fps
  source_size: tuple[int, int] = (96, 128)  # synthetic DICOM rows x columns
  image_size: int = 64  # shards and towers
  # train / val: 80 held-out studies put a figure's 95% interval at about +-0.1 (a proportion
  # near 0.5); nothing is selected on them (every stage's last step is used)
  split_fractions: tuple[float, float, float] = (0.5, 0.5, 0.0)
  clip_stride: int = 4  # the towers' 8-frame clip spans 32 frames: the whole cycle
  pretrain_steps: int = 1000
  pretrain_eval_every: int = 100
  views_steps: int = 0  # 0: the tiny config's 60 epochs
  mil_steps: int = 300
  k: int = 10  # neighbours for the kNN measurements (61 candidates)
  seed: int = 0


QUICK = Settings(pretrain_steps=500)

STAGES = ("archive", "shards", "pretrain", "views", "mil", "mil_uniform", "export", "database",
          "interpret", "probes")


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


class Demo:
  """Runs the stages in order over one working folder (see the module docstring)."""

  def __init__(self, workdir: str, settings: Settings):
    self.dir = os.path.abspath(workdir)
    self.s = settings
    self.figures: dict[str, dict] = {}

  def path(self, *parts: str) -> str:
    return os.path.join(self.dir, *parts)

  # -- bookkeeping ----------------------------------------------------------------------------

  def clear(self) -> None:
    """Deletes what the demo wrote in its folder (only that: the folder may hold other
    things)."""
    for name in (*STAGES, ".stages", "plots"):
      shutil.rmtree(self.path(name), ignore_errors=True)
    for name in ("summary.md", "summary.json", "retrieval.json", "retrieval_queries.csv"):
      if os.path.isfile(self.path(name)):
        os.remove(self.path(name))

  def _marker(self, stage: str) -> str:
    return self.path(".stages", f"{stage}.json")

  def run(self, until: str = STAGES[-1], progress=print) -> dict | None:
    """Runs the stages up to and including `until`; -> the summary after the last stage."""
    if until not in STAGES:
      raise ValueError(f"unknown stage {until!r}; stages: {STAGES}")
    os.makedirs(self.path(".stages"), exist_ok=True)
    settings = json.loads(json.dumps(dataclasses.asdict(self.s)))
    for i, stage in enumerate(STAGES[:STAGES.index(until) + 1], 1):
      marker = self._marker(stage)
      if os.path.isfile(marker):
        with open(marker) as f:
          done = json.load(f)
        if done["settings"] != settings:
          raise SystemExit(f"{self.dir}: stage {stage!r} was made with other settings "
                           f"({done['settings']}); rerun with --fresh")
        self.figures[stage] = done["figures"]
        progress(f"[{i}/{len(STAGES)}] {stage}: done earlier, reused")
        continue
      progress(f"[{i}/{len(STAGES)}] {stage} ...")
      start = time.time()
      figures = getattr(self, f"stage_{stage}")()
      self.figures[stage] = figures
      with open(marker + ".tmp", "w") as f:
        json.dump({"settings": settings, "figures": figures,
                   "seconds": round(time.time() - start, 1)}, f, indent=2)
      os.replace(marker + ".tmp", marker)
      progress(f"[{i}/{len(STAGES)}] {stage}: {time.time() - start:.0f} s")
    if until != STAGES[-1]:
      return None
    summary = self.summary()
    self.plots()
    return summary

  # -- stages ---------------------------------------------------------------------------------

  def stage_archive(self) -> dict:
    from data_prep import synthetic
    shutil.rmtree(self.path("archive"), ignore_errors=True)
    synthetic.write_archive(self.path("archive"), studies=self.s.studies, seed=self.s.seed,
                            frames=self.s.frames, size=self.s.source_size)
    with open(self.path("archive", "videos.csv")) as f:
      files = sum(1 for _ in csv.DictReader(f))
    return {"studies": self.s.studies, "files": files}

  def stage_shards(self) -> dict:
    from data_prep import convert, deid
    shutil.rmtree(self.path("shards"), ignore_errors=True)
    convert.run(self.path("archive", "dicom"), self.path("shards"), deid.INSECURE_TEST_KEY,
                convert.Options(size=self.s.image_size, split_fractions=self.s.split_fractions),
                self.path("archive", "reports.csv"), self.path("archive", "videos.csv"))
    from echoprime_jax.data.shards import ShardIndex
    index = ShardIndex(self.path("shards"))
    return {split: len(index.studies(split)) for split in ("train", "val")}

  def _config(self, module: str, variant: str = "tiny"):
    import importlib
    cfg = importlib.import_module(f"configs.{module}").get_config(variant)
    cfg.data.dir = self.path("shards")
    cfg.seed = self.s.seed
    # the figures are measured on the held-out split: choosing a checkpoint by it would bias
    # them upwards, so every stage keeps and uses its last step
    cfg.best_metric = ""
    return cfg

  def stage_pretrain(self) -> dict:
    from echoprime_jax.train import loop
    cfg = self._config("pretrain")
    cfg.total_steps = self.s.pretrain_steps
    cfg.eval_every = self.s.pretrain_eval_every
    cfg.checkpoint_every = self.s.pretrain_steps
    cfg.data.clip_stride = self.s.clip_stride
    loop.train(cfg, self.path("pretrain"))
    figures = _pick(self._last_eval("pretrain"), "study_to_report_R@1", "study_to_report_R@5",
                    "study_to_report_R@10", "num_studies")
    figures.update({f"chance_R@{k}": min(k / figures["num_studies"], 1.0) for k in (1, 5, 10)})
    return figures

  def stage_views(self) -> dict:
    from echoprime_jax.data.shards import ShardIndex
    from echoprime_jax.train import view_classifier
    cfg = self._config("views")
    cfg.total_steps = self.s.views_steps
    result = view_classifier.train(cfg, self.path("views"))
    views = np.concatenate([s.views for s in ShardIndex(self.path("shards")).studies("val")])
    views = views[views >= 0]
    majority = float(np.bincount(views).max() / len(views))
    return {**_pick(self._last_eval("views"), "accuracy", "balanced_accuracy"),
            "majority_baseline": majority, "step": int(result.step)}

  def _mil_config(self):
    cfg = self._config("mil")
    cfg.towers_from = self.path("pretrain")
    cfg.total_steps = self.s.mil_steps
    cfg.eval_every = cfg.checkpoint_every = max(self.s.mil_steps // 3, 1)
    return cfg

  def stage_mil(self) -> dict:
    from echoprime_jax.train import mil_stage
    mil_stage.train(self._mil_config(), self.path("mil"))
    return _pick(self._last_eval("mil"), "section_R@1", "uniform_section_R@1",
                 "chance_section_R@1")

  def stage_mil_uniform(self) -> dict:
    """The MIL stage again with every video weighted the same (its projection still trained):
    the baseline that says what learned attention adds over plain pooling."""
    from echoprime_jax.train import mil_stage
    cfg = self._mil_config()
    cfg.mil.attention = "uniform"
    # the same frozen towers embed the same videos: the cache carries over
    shutil.copytree(self.path("mil", "embeddings"), self.path("mil_uniform", "embeddings"),
                    dirs_exist_ok=True)
    mil_stage.train(cfg, self.path("mil_uniform"))
    return _pick(self._last_eval("mil_uniform"), "section_R@1")

  def _last_eval(self, stage: str) -> dict:
    """The stage's last validation metrics (from its metrics.jsonl: also right when a finished
    run was resumed and had nothing left to do)."""
    rows = [r for r in _metrics(self.path(stage, "metrics.jsonl"))
            if any(k.startswith("val/") for k in r)]
    if not rows:
      raise RuntimeError(f"{self.path(stage)}: no validation metrics were logged")
    return {k[4:]: v for k, v in rows[-1].items() if k.startswith("val/")}

  def stage_export(self) -> dict:
    from echoprime_jax import export
    _main(export.main, ["--towers", self.path("pretrain"), "--data", self.path("shards"),
                        "--split", "val", "--out", self.path("export"), "--mil",
                        self.path("mil"), "--views", self.path("views"), "--batch", "16"])
    import pyarrow.parquet as pq
    videos = pq.read_table(self.path("export", "videos.parquet")).to_pydict()
    agree = np.mean([p == t for p, t in zip(videos["predicted_view"], videos["view"])])
    return {"videos": len(videos["row"]), "predicted_view_accuracy": float(agree)}

  def stage_database(self) -> dict:
    from echoprime_jax import index
    shutil.rmtree(self.path("database"), ignore_errors=True)
    _main(index.main, ["build", "--mil_run", self.path("mil"), "--out", self.path("database")])
    _main(index.main, ["evaluate", "--db", self.path("database"), "--mil_run", self.path("mil"),
                       "--k", str(self.s.k), "--out", self.path("retrieval.json"),
                       "--queries_out", self.path("retrieval_queries.csv")])
    with open(self.path("retrieval.json")) as f:
      return json.load(f)

  def held_out_study(self) -> tuple[str, dict]:
    """(DICOM folder, ground-truth row) of the first validation-split study."""
    from data_prep import deid
    from echoprime_jax.data.shards import ShardIndex
    val = {s.study_id for s in ShardIndex(self.path("shards")).studies("val")}
    pseudo = deid.Pseudonymizer(deid.INSECURE_TEST_KEY)
    with open(self.path("archive", "ground_truth.csv")) as f:
      row = next(r for r in csv.DictReader(f) if pseudo.study(r["StudyInstanceUID"]) in val)
    return self.path("archive", "dicom", f"study_{int(row['study_index']):05d}"), row

  def stage_interpret(self) -> dict:
    from echoprime_jax import interpret
    folder, truth = self.held_out_study()
    _main(interpret.main, [folder, "--model", self.path("mil"), "--index",
                           self.path("database"), "--views", self.path("views"), "--out",
                           self.path("interpret"), "--k", str(self.s.k)])
    with open(self.path("interpret", "interpretation.json")) as f:
      result = json.load(f)
    return {"true_lvef": float(truth["lvef"]),
            "predicted_lvef": result["measurements"]["lvef"]["value"],
            "true_pericardial_effusion": truth["pericardial_effusion"],
            "predicted_pericardial_effusion": result["measurements"]["pericardial_effusion"]
            ["grade"], "videos": len(result["videos"])}

  def stage_probes(self) -> dict:
    from data_prep import deid
    from echoprime_jax import probe
    pseudo = deid.Pseudonymizer(deid.INSECURE_TEST_KEY)
    labels = self.path("probes", "labels.csv")
    os.makedirs(os.path.dirname(labels), exist_ok=True)
    with open(self.path("archive", "ground_truth.csv")) as f, open(labels, "w", newline="") as g:
      w = csv.writer(g)
      w.writerow(["study_id", "lvef", "left_atrium_dilated"])
      for r in csv.DictReader(f):
        w.writerow([pseudo.study(r["StudyInstanceUID"]), r["lvef"],
                    int(r["left_atrium_dilation"] != "none")])
    out = {}
    for target in ("lvef", "left_atrium_dilated"):
      _main(probe.main, ["--export", self.path("export"), "--data", self.path("shards"),
                         "--labels", labels, "--target", target, "--ablation",
                         "--out", self.path("probes"), "--bootstraps", "1000"])
      with open(self.path("probes", f"{target}_summary.json")) as f:
        out[target] = json.load(f)
    return out

  # -- summary --------------------------------------------------------------------------------

  def figures_table(self) -> list[Figure]:
    """Every figure of the summary with its 95% interval over the held-out studies, measured
    from the stages' files (each study's outcome; `echoprime_jax.bootstrap`)."""
    import pyarrow.parquet as pq
    from echoprime_jax import bootstrap
    from echoprime_jax.train.pretrain import own_rank
    rows: list[Figure] = []

    def add(what, outcomes, groups, baseline, baseline_name, higher=True, judged=True):
      rows.append(Figure(what, float(np.nanmean(outcomes)),
                         bootstrap.mean_interval(outcomes, groups), float(baseline),
                         baseline_name, higher, judged))

    # study -> report retrieval with the pretrained towers (the export's held-out studies)
    has_report = np.asarray(pq.read_table(self.path("export", "studies.parquet"))
                            .column("has_report").to_pylist())
    study = np.load(self.path("export", "study_mean.npy"))[has_report]
    report = np.load(self.path("export", "report_embeddings.npy"))[has_report]
    rank = own_rank(study @ report.T)
    for k in (5, 10):
      add(f"study->report retrieval R@{k}", rank < k, None, min(k / len(rank), 1.0), "chance")
    # R@1 asks for the one report (of ~80) whose EF figure matches to the percent: at this size
    # its interval is as wide as the figure itself, so it is shown, not judged
    add("study->report retrieval R@1", rank < 1, None, 1 / len(rank), "chance", judged=False)
    # views: every held-out video, resampled by study
    videos = pq.read_table(self.path("export", "videos.parquet")).to_pydict()
    labelled = np.asarray([v != "" for v in videos["view"]])
    correct = np.asarray([p == t for p, t in zip(videos["predicted_view"], videos["view"])])
    truth = np.asarray(videos["view"])[labelled]
    majority = max(np.unique(truth, return_counts=True)[1]) / len(truth)
    add("view classification accuracy", correct[labelled],
        np.asarray(videos["study_id"])[labelled], majority, "majority view")
    # MIL: every (study, section) query, resampled by study
    q = np.load(self.path("mil", "export", "val_section_ranks.npz"))
    uniform = np.load(self.path("mil_uniform", "export", "val_section_ranks.npz"))
    add("MIL section retrieval R@1", q["rank"] < 1, q["study"], np.mean(q["uniform_rank"] < 1),
        "uniform pooling")
    # the ablation: uniform pooling with the projection trained as MIL's is (README: why the
    # two are close on this archive)
    add("MIL section retrieval R@1, attention fixed uniform", uniform["rank"] < 1,
        uniform["study"], np.mean(q["rank"] < 1), "learned attention", judged=False)
    # the candidate database: one query per held-out study
    with open(self.path("retrieval_queries.csv")) as f:
      table = list(csv.DictReader(f))
    per_study = {k: np.asarray([float(r[k]) for r in table]) for k in table[0] if k != "study_id"}
    for name, label in (("pericardial_effusion", "pericardial effusion grade"),
                        ("left_atrium_dilation", "left-atrial dilation grade")):
      key = f"report/{name}_accuracy"
      add(f"retrieved report states the {label}", per_study[key], None,
          np.nanmean(per_study[f"random_{key}"]), "random neighbours")
    add("retrieved report states the LVEF band", per_study["report/lvef_band_accuracy"], None,
        np.nanmean(per_study["random_report/lvef_band_accuracy"]), "random neighbours")
    add(f"LVEF from {self.s.k} retrieved neighbours, MAE", per_study["knn/lvef_mae"], None,
        np.nanmean(per_study["mean_baseline/lvef_mae"]), "candidates' mean", higher=False)
    # probes: their own out-of-fold predictions, bootstrapped by the probe over studies
    p = self.figures["probes"]
    lvef, atrium = p["lvef"]["study_mean"], p["left_atrium_dilated"]["study_mean"]
    rows.append(Figure("LVEF probe MAE (study mean, linear)", lvef["linear"]["mae"],
                       tuple(lvef["linear"]["mae_ci"]), lvef["baseline"]["mae"],
                       "predict the mean", False))
    rows.append(Figure("left-atrial dilation probe AUC (study mean, linear)",
                       atrium["linear"]["auc"], tuple(atrium["linear"]["auc_ci"]), 0.5,
                       "chance", True))
    return rows

  def summary(self) -> dict:
    rows = self.figures_table()
    held_out = len(np.load(self.path("export", "study_mean.npy")))
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
    i = self.figures["interpret"]
    lines += ["", f"Held-out study interpreted ({i['videos']} videos): LVEF {i['true_lvef']:.0f} "
              f"true, {i['predicted_lvef']:.1f} predicted; pericardial effusion "
              f"{i['true_pericardial_effusion']} true, {i['predicted_pericardial_effusion']} "
              f"predicted. Page: {self.path('interpret', 'report.html')}"]
    text = "\n".join(lines)
    print("\n" + text)
    _write_atomically(self.path("summary.md"), text + "\n")
    out = {"held_out_studies": held_out,
           "rows": [{"figure": r.what, "value": r.value, "interval": list(r.interval),
                     "baseline": r.baseline, "baseline_name": r.baseline_name,
                     "higher_is_better": r.higher_is_better, "judged": r.judged,
                     "beats_baseline": r.beats} for r in rows],
           "stages": self.figures, "settings": dataclasses.asdict(self.s)}
    _write_atomically(self.path("summary.json"), json.dumps(out, indent=2))
    return out

  def plots(self) -> None:
    from echoprime_jax import plots
    os.makedirs(self.path("plots"), exist_ok=True)
    rows = _metrics(self.path("pretrain", "metrics.jsonl"))
    train = [r for r in rows if "loss" in r]
    plots.line_chart({"training loss": ([r["step"] for r in train], [r["loss"] for r in train])},
                     self.path("plots", "pretrain_loss.png"), "pretraining: contrastive loss",
                     xlabel="training step", ylabel="contrastive loss")
    val = [r for r in rows if "val/study_to_report_R@10" in r]
    steps = [r["step"] for r in val]
    plots.line_chart({"val R@10": (steps, [r["val/study_to_report_R@10"] for r in val]),
                      "val R@1": (steps, [r["val/study_to_report_R@1"] for r in val]),
                      "chance R@10": (steps, [r["val/chance_R@10"] for r in val])},
                     self.path("plots", "pretrain_recall.png"),
                     "pretraining: study->report retrieval on held-out studies",
                     xlabel="training step", ylabel="recall (fraction of held-out studies)",
                     dashed=("chance R@10",))
    mil = [r for r in _metrics(self.path("mil", "metrics.jsonl")) if "val/section_R@1" in r]
    steps = [r["step"] for r in mil]
    plots.line_chart({"section R@1": (steps, [r["val/section_R@1"] for r in mil]),
                      "uniform pooling": (steps, [r["val/uniform_section_R@1"] for r in mil])},
                     self.path("plots", "mil_recall.png"), "MIL: held-out section retrieval",
                     xlabel="training step", ylabel="section R@1", dashed=("uniform pooling",))
    confusion = sorted((f for f in os.listdir(self.path("views", "confusion"))
                        if f.startswith("step_") and f.endswith(".png")),
                       key=lambda f: int(f[5:-4]))
    if confusion:
      shutil.copyfile(self.path("views", "confusion", confusion[-1]),
                      self.path("plots", "views_confusion.png"))


def _write_atomically(path: str, text: str) -> None:
  """A reader never sees half a file: written to a temporary sibling, then renamed."""
  with open(path + ".tmp", "w") as f:
    f.write(text)
  os.replace(path + ".tmp", path)


def _pick(metrics: dict, *keys: str) -> dict:
  missing = [k for k in keys if k not in metrics]
  if missing:
    raise RuntimeError(f"the stage's last evaluation lacks {missing}")
  return {k: float(metrics[k]) for k in keys}


def _metrics(path: str) -> list[dict]:
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def _main(fn, argv: list[str]) -> None:
  """Runs another command's main(argv) in this process; its stdout goes to the log."""
  buf = io.StringIO()
  with contextlib.redirect_stdout(buf):
    code = fn(argv)
  for line in buf.getvalue().splitlines():
    log.info("%s", line)
  if code:
    raise SystemExit(f"{fn.__module__} {' '.join(argv)} failed with exit code {code}")


def main(argv: list[str] | None = None) -> int:
  p = argparse.ArgumentParser(prog="python -m echoprime_jax.demo", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--workdir", required=True, help="folder for every stage's outputs")
  p.add_argument("--fresh", action="store_true",
                 help="delete the stages already in WORKDIR and run everything again")
  p.add_argument("--quick", action="store_true",
                 help="half the pretraining steps (500): ~4 minutes, weaker figures; what the "
                      "test suite runs")
  p.add_argument("--studies", type=int, default=0,
                 help="synthetic studies (default 160, half of them held out; fewer widen "
                      "every interval)")
  p.add_argument("--seed", type=int, default=0,
                 help="seed of the synthetic archive, the split's data order and every model's "
                      "initialisation (default 0)")
  p.add_argument("--until", default=STAGES[-1], choices=STAGES,
                 help="stop after this stage (default: all, then the summary)")
  args = p.parse_args(argv)
  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
  logging.getLogger("absl").setLevel(logging.WARNING)
  from echoprime_jax import xla_flags
  xla_flags.apply()
  settings = QUICK if args.quick else Settings()
  if args.studies:
    settings = dataclasses.replace(settings, studies=args.studies)
  settings = dataclasses.replace(settings, seed=args.seed)
  demo = Demo(args.workdir, settings)
  if args.fresh:
    demo.clear()
  summary = demo.run(args.until)
  if summary is None:
    print(f"stopped after stage {args.until!r}; outputs in {os.path.abspath(args.workdir)}")
    return 0
  failed = [r["figure"] for r in summary["rows"] if r["judged"] and not r["beats_baseline"]]
  if failed:
    print(f"\n{len(failed)} figure(s) did not beat their baseline: {failed}")
  print(f"\noutputs in {os.path.abspath(args.workdir)} (summary.md, plots/, interpret/report.html)")
  return 0


if __name__ == "__main__":
  sys.exit(main())
