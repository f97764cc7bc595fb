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
  # the demo's seed-0 run (held on this machine and under SSE4_2; the demo judges the same
  # figures with intervals): retrieved reports state the findings far better than random
  # neighbours' (measured 0.87 vs 0.37, 0.78 vs 0.42), kNN grades beat the majority grade
  # (0.87 vs 0.55, 0.78 vs 0.60), LVEF from neighbours beats the candidates' mean (5.7 vs
  # 15.1), LV dysfunction AUC 0.96 (0.91-0.95 on seeds 1-2)
  for name in ("pericardial_effusion", "left_atrium_dilation"):
    assert m[f"report/{name}_accuracy"] > m[f"random_report/{name}_accuracy"] + 0.2, name
    assert (m[f"knn/{name}_grade_accuracy"]
            > m[f"majority_baseline/{name}_grade_accuracy"] + 0.1), name
  assert m["knn/lvef_mae"] < 0.6 * m["mean_baseline/lvef_mae"]
  assert m["knn/lv_systolic_dysfunction_auc"] > 0.8
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
