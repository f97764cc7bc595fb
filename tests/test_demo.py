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

from echoprime_jax import demo

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

OUTPUTS = ("archive/ground_truth.csv", "shards/studies.parquet", "shards/manifest.parquet",
           "pretrain/config.json", "views/config.json", "mil/attention_table.csv",
           "export/video_embeddings.npy", "export/study_sections.npy",
           "database/database.json", "retrieval.json", "interpret/report.html",
           "interpret/interpretation.json", "probes/lvef_summary.json",
           "probes/left_atrium_dilated_summary.json", "summary.md", "summary.json",
           "plots/pretrain_loss.png", "plots/pretrain_recall.png", "plots/mil_recall.png",
           "plots/views_confusion.png")


def test_quick_demo_beats_every_baseline(demo_run):
  workdir, run = demo_run
  for name in OUTPUTS:
    assert os.path.isfile(workdir / name), name
  summary = json.load(open(workdir / "summary.json"))
  print(open(workdir / "summary.md").read())
  rows = {r["figure"]: r for r in summary["rows"]}
  assert len(rows) == 11
  for r in rows.values():
    assert r["beats_baseline"], r
  # the table the user sees is the one in summary.md
  assert "| figure | value | baseline | beats it |" in run.stdout
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
