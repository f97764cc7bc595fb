"""`python -m echoprime_jax.demo --quick`: every stage's outputs, the summary's figures against
their baselines, the plots, and a rerun that reuses every stage.

The quick demo is the session's shared chain (conftest.demo_run): archive -> shards -> pretrain
-> views -> MIL -> export -> database -> interpret -> probes, ~5 minutes on 2 cores.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from echoprime_jax import demo

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

OUTPUTS = ("archive/ground_truth.csv", "shards/studies.parquet", "shards/manifest.parquet",
           "pretrain/config.json", "views/config.json", "mil/attention_table.csv",
           "export/video_embeddings.npy", "export/study_sections.npy",
           "database/database.json", "retrieval.json", "interpret/report.html",
           "interpret/interpretation.json", "probes/lvef_summary.json",
           "probes/left_atrium_dilated_summary.json", "summary.md", "summary.json",
           "plots/pretrain_loss.png", "plots/pretrain_recall.png", "plots/mil_recall.png",
           "plots/views_confusion.png", "retrieval_queries.csv",
           "mil/export/val_section_ranks.npz")


def test_quick_demo_beats_every_baseline(demo_run):
  workdir, run = demo_run
  for name in OUTPUTS:
    assert os.path.isfile(workdir / name), name
  summary = json.load(open(workdir / "summary.json"))
  print(open(workdir / "summary.md").read())
  assert summary["held_out_studies"] >= 70  # the intervals' width follows from it
  rows = {r["figure"]: r for r in summary["rows"]}
  judged = [r for r in rows.values() if r["judged"]]
  assert len(judged) == 10 and len(rows) == 12
  for r in rows.values():
    lo, hi = r["interval"]
    assert lo <= r["value"] <= hi, r
  for r in judged:
    # "beats it" means the whole 95% interval over held-out studies clears the baseline
    lo, hi = r["interval"]
    assert (lo > r["baseline"]) if r["higher_is_better"] else (hi < r["baseline"]), r
    assert r["beats_baseline"], r
  # intervals are real: a proportion over ~80 studies is not known to +-0.03
  r10 = rows["study->report retrieval R@10"]
  assert r10["interval"][1] - r10["interval"][0] > 0.06
  # the table the user sees is the one in summary.md
  assert "| figure | value [95% interval] | baseline | beats it |" in run.stdout
  assert "NO |" not in run.stdout
  # the plots are drawn (not blank canvases)
  from PIL import Image
  for name in ("pretrain_loss", "pretrain_recall", "mil_recall"):
    img = np.asarray(Image.open(workdir / "plots" / f"{name}.png").convert("RGB"))
    coloured = (np.ptp(img.astype(int), axis=-1) > 60).mean()
    assert coloured > 0.002, name  # curves in colour, not only black axes


def test_rerun_reuses_every_stage(demo_run):
  workdir, _ = demo_run
  before = open(workdir / "summary.md").read()
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  run = subprocess.run([sys.executable, "-m", "echoprime_jax.demo", "--workdir", str(workdir),
                        "--quick"], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=300)
  assert run.returncode == 0, run.stderr[-3000:]
  assert run.stdout.count("done earlier, reused") == len(demo.STAGES)
  assert open(workdir / "summary.md").read() == before
  # other settings in the same folder are refused, not mixed in
  other = subprocess.run([sys.executable, "-m", "echoprime_jax.demo", "--workdir",
                          str(workdir)], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=300)
  assert other.returncode != 0 and "--fresh" in other.stderr


def test_a_figure_beats_its_baseline_only_when_its_interval_clears_it():
  up = demo.Figure("R@1", 0.30, (0.22, 0.38), 0.20, "chance", True)
  assert up.beats
  assert not demo.Figure("R@1", 0.30, (0.19, 0.38), 0.20, "chance", True).beats
  assert demo.Figure("MAE", 6.0, (5.0, 7.9), 8.0, "mean", False).beats
  assert not demo.Figure("MAE", 6.0, (5.0, 8.1), 8.0, "mean", False).beats


def test_the_demo_replaces_and_clears_only_what_it_made(tmp_path):
  """A folder of the user's with a stage's name is refused, never replaced; --fresh (clear)
  removes the demo's own stages and leaves the rest."""
  settings = demo.Settings(studies=2, frames=4)
  work = tmp_path / "work"
  (work / "shards").mkdir(parents=True)
  (work / "shards" / "mine.txt").write_text("the user's")
  (work / "notes.md").write_text("the user's")
  d = demo.Demo(str(work), settings)
  d.run(until="archive", progress=lambda _: None)
  assert (work / "archive" / "ground_truth.csv").is_file()
  with pytest.raises(FileExistsError, match="was not made by the demo"):
    d.run(until="shards", progress=lambda _: None)
  assert (work / "shards" / "mine.txt").read_text() == "the user's"
  d.clear()
  assert not (work / "archive").exists() and not (work / ".stages").exists()
  assert sorted(p.name for p in work.iterdir()) == ["notes.md", "shards"]
  assert (work / "shards" / "mine.txt").read_text() == "the user's"
