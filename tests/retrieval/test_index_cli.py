"""`python -m echoprime_jax.index build / evaluate` on the tiny MIL run's outputs: retrieved
reports and kNN measurements against random-neighbour and mean baselines."""

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
                       "--mil_run", str(mil_dir), "--k", "10", "--out", str(out)],
                      cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
  assert ev.returncode == 0, ev.stderr[-3000:]
  print(ev.stdout)
  m = json.load(open(out))
  assert m["queries"] == 44 and m["candidates"] == 56
  # Measured values in the README; the bars: better than the baselines.
  assert m["report/lvef_band_accuracy"] > m["random_report/lvef_band_accuracy"], m
  assert m["knn/lvef_mae"] < m["mean_baseline/lvef_mae"], m
