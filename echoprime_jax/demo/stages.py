"""The demo's stages as data: each a name, what it makes and the library call that makes it,
run in order over one working folder by `Demo` (see the package docstring)."""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import os
import shutil
import time
from typing import Callable

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


@dataclasses.dataclass(frozen=True)
class Stage:
  name: str  # its folder in WORKDIR
  makes: str  # one line: what it makes
  run: Callable[["Demo"], dict]  # -> the stage's figures (kept in .stages/<name>.json)


class Demo:
  """Runs the stages in order over one working folder (see the package docstring)."""

  def __init__(self, workdir: str, settings: Settings):
    self.dir = os.path.abspath(workdir)
    self.s = settings
    self.figures: dict[str, dict] = {}

  def path(self, *parts: str) -> str:
    return os.path.join(self.dir, *parts)

  def _made_here(self, stage: str) -> bool:
    """The demo started (or finished) `stage` in this folder: its folder is the demo's."""
    return any(os.path.isfile(self.path(".stages", f"{stage}.{end}"))
               for end in ("json", "started"))

  def clear(self) -> None:
    """Deletes what the demo wrote in its folder, and only that: a stage's folder only if the
    demo's own record says it made it (the folder may hold other things)."""
    if not os.path.isdir(self.path(".stages")):
      return  # the demo never ran here: nothing of ours
    for stage in STAGES:
      if self._made_here(stage.name):
        shutil.rmtree(self.path(stage.name), ignore_errors=True)
    if os.path.isfile(self.path("summary.json")):  # plots/ is written with the summary
      shutil.rmtree(self.path("plots"), ignore_errors=True)
    for name in ("summary.md", "summary.json", "retrieval.json", "retrieval_queries.csv"):
      if os.path.isfile(self.path(name)):
        os.remove(self.path(name))
    shutil.rmtree(self.path(".stages"))

  def run(self, until: str | None = None, progress=print) -> dict | None:
    """Runs the stages up to and including `until` (default all); -> the summary after the
    last stage."""
    from echoprime_jax.demo import summary
    names = [s.name for s in STAGES]
    until = until or names[-1]
    if until not in names:
      raise ValueError(f"unknown stage {until!r}; stages: {names}")
    os.makedirs(self.path(".stages"), exist_ok=True)
    settings = json.loads(json.dumps(dataclasses.asdict(self.s)))
    for i, stage in enumerate(STAGES[:names.index(until) + 1], 1):
      marker = self.path(".stages", f"{stage.name}.json")
      if os.path.isfile(marker):
        with open(marker) as f:
          done = json.load(f)
        if done["settings"] != settings:
          raise ValueError(f"{self.dir}: stage {stage.name!r} was made with other settings "
                           f"({done['settings']}); rerun with --fresh")
        self.figures[stage.name] = done["figures"]
        progress(f"[{i}/{len(STAGES)}] {stage.name}: done earlier, reused")
        continue
      if os.path.exists(self.path(stage.name)) and not self._made_here(stage.name):
        raise FileExistsError(f"{self.path(stage.name)}: exists and was not made by the demo, "
                              "which would replace it; use another --workdir")
      with open(self.path(".stages", f"{stage.name}.started"), "w") as f:
        f.write("the demo writes this stage's folder\n")
      progress(f"[{i}/{len(STAGES)}] {stage.name}: {stage.makes} ...")
      start = time.time()
      self.figures[stage.name] = stage.run(self)
      summary.write_atomically(marker, json.dumps(
          {"settings": settings, "figures": self.figures[stage.name],
           "seconds": round(time.time() - start, 1)}, indent=2))
      progress(f"[{i}/{len(STAGES)}] {stage.name}: {time.time() - start:.0f} s")
    if until != names[-1]:
      return None
    out = summary.summary(self)
    summary.plots(self)
    return out

  def config(self, module: str):
    """The tiny variant of configs/<module>.py on the demo's shards and seed."""
    import importlib
    cfg = importlib.import_module(f"configs.{module}").get_config("tiny")
    cfg.data.dir = self.path("shards")
    cfg.seed = self.s.seed
    # the figures are measured on the held-out split: choosing a checkpoint by it would bias
    # them upwards, so every stage keeps and uses its last step
    cfg.best_metric = ""
    return cfg

  def held_out_study(self) -> tuple[str, dict]:
    """(DICOM folder, ground-truth row) of the first validation-split study."""
    from data_prep import deid
    from echoprime_jax.data.shards import ShardIndex
    val = {s.study_id for s in ShardIndex(self.path("shards")).studies("val")}
    pseudo = deid.Pseudonymizer(deid.INSECURE_TEST_KEY)
    with open(self.path("archive", "ground_truth.csv")) as f:
      row = next(r for r in csv.DictReader(f) if pseudo.study(r["StudyInstanceUID"]) in val)
    return self.path("archive", "dicom", f"study_{int(row['study_index']):05d}"), row


# -- the stages ---------------------------------------------------------------------------------


def archive(d: Demo) -> dict:
  from data_prep import synthetic
  shutil.rmtree(d.path("archive"), ignore_errors=True)
  synthetic.write_archive(d.path("archive"), studies=d.s.studies, seed=d.s.seed,
                          frames=d.s.frames, size=d.s.source_size)
  with open(d.path("archive", "videos.csv")) as f:
    files = sum(1 for _ in csv.DictReader(f))
  return {"studies": d.s.studies, "files": files}


def shards(d: Demo) -> dict:
  from data_prep import convert, deid
  from echoprime_jax.data.shards import ShardIndex
  shutil.rmtree(d.path("shards"), ignore_errors=True)
  convert.run(d.path("archive", "dicom"), d.path("shards"), deid.INSECURE_TEST_KEY,
              convert.Options(size=d.s.image_size, split_fractions=d.s.split_fractions),
              d.path("archive", "reports.csv"), d.path("archive", "videos.csv"))
  index = ShardIndex(d.path("shards"))
  return {split: len(index.studies(split)) for split in ("train", "val")}


def pretrain(d: Demo) -> dict:
  from echoprime_jax.demo.summary import last_eval, pick
  from echoprime_jax.train import train
  cfg = d.config("pretrain")
  cfg.total_steps = d.s.pretrain_steps
  cfg.eval_every = d.s.pretrain_eval_every
  cfg.checkpoint_every = d.s.pretrain_steps
  cfg.towers.video.clip_stride = d.s.clip_stride
  train(cfg, d.path("pretrain"))
  figures = pick(last_eval(d, "pretrain"), "study_to_report_R@1", "study_to_report_R@5",
                 "study_to_report_R@10", "num_studies")
  figures.update({f"chance_R@{k}": min(k / figures["num_studies"], 1.0) for k in (1, 5, 10)})
  return figures


def views(d: Demo) -> dict:
  from echoprime_jax.data.shards import ShardIndex
  from echoprime_jax.demo.summary import last_eval, pick
  from echoprime_jax.train import train
  cfg = d.config("views")
  cfg.total_steps = d.s.views_steps
  result = train(cfg, d.path("views"))
  labels = np.concatenate([s.views for s in ShardIndex(d.path("shards")).studies("val")])
  labels = labels[labels >= 0]
  majority = float(np.bincount(labels).max() / len(labels))
  return {**pick(last_eval(d, "views"), "accuracy", "balanced_accuracy"),
          "majority_baseline": majority, "step": int(result.step)}


def _mil_config(d: Demo, attention: str):
  cfg = d.config("mil")
  cfg.towers_from = d.path("pretrain")
  cfg.total_steps = d.s.mil_steps
  cfg.eval_every = cfg.checkpoint_every = max(d.s.mil_steps // 3, 1)
  cfg.mil.attention = attention
  return cfg


def mil(d: Demo) -> dict:
  from echoprime_jax.demo.summary import last_eval, pick
  from echoprime_jax.train import train
  train(_mil_config(d, "gated"), d.path("mil"))
  return pick(last_eval(d, "mil"), "section_R@1", "uniform_section_R@1", "chance_section_R@1")


def mil_uniform(d: Demo) -> dict:
  """The MIL stage again with every video weighted the same (its projection still trained):
  the baseline that says what learned attention adds over plain pooling."""
  from echoprime_jax.demo.summary import last_eval, pick
  from echoprime_jax.run.folder import RunFolder
  from echoprime_jax.train import train
  # the same frozen towers embed the same videos: the cache carries over
  shutil.copytree(RunFolder(d.path("mil")).embedding_cache,
                  RunFolder(d.path("mil_uniform")).embedding_cache, dirs_exist_ok=True)
  train(_mil_config(d, "uniform"), d.path("mil_uniform"))
  return pick(last_eval(d, "mil_uniform"), "section_R@1")


def export(d: Demo) -> dict:
  import pyarrow.parquet as pq

  from echoprime_jax.inference import split_export
  split_export.export_split(split_export.ExportRequest(
      towers=d.path("pretrain"), data=d.path("shards"), split="val", out=d.path("export"),
      mil=d.path("mil"), views=d.path("views"), batch=16))
  videos = pq.read_table(d.path("export", split_export.VIDEOS)).to_pydict()
  agree = np.mean([p == t for p, t in zip(videos["predicted_view"], videos["view"])])
  return {"videos": len(videos["row"]), "predicted_view_accuracy": float(agree)}


def database(d: Demo) -> dict:
  from echoprime_jax.demo.summary import write_atomically
  from echoprime_jax.evaluation import retrieval_figures
  from echoprime_jax.retrieval import from_runs
  shutil.rmtree(d.path("database"), ignore_errors=True)
  from_runs.build_database(d.path("mil"), d.path("database"))
  metrics, outcomes, study_ids = retrieval_figures.evaluate_database(
      d.path("database"), d.path("mil"), k=d.s.k)
  write_atomically(d.path("retrieval.json"), json.dumps(metrics, indent=2))
  retrieval_figures.write_outcomes_csv(d.path("retrieval_queries.csv"), study_ids, outcomes)
  return metrics


def interpret(d: Demo) -> dict:
  from echoprime_jax.inference import interpretation
  shutil.rmtree(d.path("interpret"), ignore_errors=True)  # the demo's own (`Demo.run` checks)
  folder, truth = d.held_out_study()
  result, strips = interpretation.interpret_study(folder, model=d.path("mil"),
                                                  index=d.path("database"),
                                                  views=d.path("views"), k=d.s.k)
  interpretation.write_outputs(result, strips, d.path("interpret"))
  measured = result["measurements"]
  return {"true_lvef": float(truth["lvef"]), "predicted_lvef": measured["lvef"]["value"],
          "true_pericardial_effusion": truth["pericardial_effusion"],
          "predicted_pericardial_effusion": measured["pericardial_effusion"]["grade"],
          "videos": len(result["videos"])}


def probes(d: Demo) -> dict:
  from data_prep import deid
  from echoprime_jax.evaluation.export_probes import ProbeRequest, probe_export
  pseudo = deid.Pseudonymizer(deid.INSECURE_TEST_KEY)
  labels = d.path("probes", "labels.csv")
  os.makedirs(os.path.dirname(labels), exist_ok=True)
  with open(d.path("archive", "ground_truth.csv")) as f, open(labels, "w", newline="") as g:
    w = csv.writer(g)
    w.writerow(["study_id", "lvef", "left_atrium_dilated"])
    for r in csv.DictReader(f):
      w.writerow([pseudo.study(r["StudyInstanceUID"]), r["lvef"],
                  int(r["left_atrium_dilation"] != "none")])
  results = {target: probe_export(ProbeRequest(
      export=d.path("export"), labels=labels, target=target, data=d.path("shards"),
      ablation=True, out=d.path("probes"), bootstraps=1000, say=log.info))
      for target in ("lvef", "left_atrium_dilated")}
  return json.loads(json.dumps(results))  # as stored in the stage's marker


STAGES = (
    Stage("archive", "synthetic DICOM studies, reports and ground truth", archive),
    Stage("shards", "de-identified shards at 64 px, split by patient", shards),
    Stage("pretrain", "the tiny video-report CLIP", pretrain),
    Stage("views", "the tiny 11-view classifier", views),
    Stage("mil", "the section aggregator on the frozen towers", mil),
    Stage("mil_uniform", "the aggregator with attention fixed uniform (the ablation)",
          mil_uniform),
    Stage("export", "embeddings and predicted views of the held-out split", export),
    Stage("database", "the candidate database and its retrieval evaluation", database),
    Stage("interpret", "one held-out study's report, measurements and page", interpret),
    Stage("probes", "LVEF and left-atrial dilation probes", probes),
)
