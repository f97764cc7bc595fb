"""`python -m echoprime_jax.index build / evaluate` on the tiny MIL run's outputs.

The tiny towers (300 pretraining steps) do not yet read LVEF from 64-px clips, so this checks
the command line end to end (files, counts, every metric and its baseline present and in
range), not retrieval quality; the composition and measurement logic is tested exactly in
test_report_composer.py."""

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_build_and_evaluate_on_the_tiny_mil_run(tiny_mil_run, tmp_path):
  mil_dir, run = tiny_mil_run
  assert run.returncode == 0, run.stderr[-3000:]
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  db = tmp_path / "db"
  built = subprocess.run([sys.executable, "-m", "echoprime_jax.index", "build",
                          "--mil_run", str(mil_dir), "--out", str(db)],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
  assert built.returncode == 0, built.stderr[-3000:]
  assert "exact index" in built.stdout
  for name in ("candidates.parquet", "embeddings.npy", "rules.json", "index/index.json"):
    assert os.path.isfile(db / name), name
  out = tmp_path / "metrics.json"
  ev = subprocess.run([sys.executable, "-m", "echoprime_jax.index", "evaluate", "--db", str(db),
                       "--mil_run", str(mil_dir), "--k", "10", "--out", str(out),
                       "--queries_out", str(tmp_path / "queries.csv")],
                      cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
  assert ev.returncode == 0, ev.stderr[-3000:]
  print(ev.stdout)
  m = json.load(open(out))
  from echoprime_jax.data.shards import ShardIndex
  index = ShardIndex(json.load(open(mil_dir / "config.json"))["data"]["dir"])
  assert m["queries"] == len(index.studies("val"))
  assert m["candidates"] == len(index.studies("train"))
  for name in ("pericardial_effusion", "left_atrium_dilation"):
    for key in (f"report/{name}_accuracy", f"random_report/{name}_accuracy",
                f"knn/{name}_grade_accuracy", f"majority_baseline/{name}_grade_accuracy"):
      assert 0.0 <= m[key] <= 1.0, key
  assert m["knn/lvef_mae"] > 0 and m["mean_baseline/lvef_mae"] > 0
  assert 0.0 <= m["knn/lv_systolic_dysfunction_auc"] <= 1.0
  # one row per held-out study (its pseudonym), and every mean-type figure is its column's mean
  import csv
  import math
  rows = list(csv.DictReader(open(tmp_path / "queries.csv")))
  assert len(rows) == m["queries"]
  assert {r["study_id"] for r in rows} == {s.study_id for s in index.studies("val")}
  for key in ("report/pericardial_effusion_accuracy", "report/lvef_band_accuracy",
              "knn/lvef_mae", "random_report/left_atrium_dilation_accuracy"):
    column = [float(r[key]) for r in rows if not math.isnan(float(r[key]))]
    assert abs(sum(column) / len(column) - m[key]) < 1e-5, key
