"""Probes: patient-grouped folds, KNN / linear probes find a planted signal, metrics by hand,
and the CLI on a small export folder."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from echoprime_jax.evaluation import probes

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _planted(n=240, d=16, seed=0):
  rng = np.random.default_rng(seed)
  x = rng.standard_normal((n, d))
  w = rng.standard_normal(d)
  y = x @ w * 3 + 50 + rng.standard_normal(n)  # an "LVEF" linear in the embedding
  groups = np.repeat(np.arange(n // 3), 3)  # 3 studies per patient
  return x, y, groups


def test_group_folds_never_split_a_patient():
  groups = np.repeat(np.arange(40), np.random.default_rng(0).integers(1, 5, 40))
  fold = probes.group_folds(groups, 5)
  for g in np.unique(groups):
    assert len(np.unique(fold[groups == g])) == 1
  sizes = np.bincount(fold)
  assert sizes.max() - sizes.min() <= 4  # balanced by rows


def test_probes_find_a_planted_linear_signal():
  x, y, groups = _planted()
  y[::17] = np.nan  # unlabelled studies are dropped
  r = probes.probe(x, y, groups, "regression", bootstraps=200)
  assert r["n"] == 240 - len(y[::17])
  assert r["linear"]["mae"] < 0.2 * r["baseline"]["mae"], r["linear"]
  assert r["knn"]["mae"] < r["baseline"]["mae"]
  lo, hi = r["linear"]["mae_ci"]
  assert lo <= r["linear"]["mae"] <= hi
  assert r["linear"]["r2"] > 0.9
  b = (y > np.nanmedian(y)).astype(float)
  b[np.isnan(y)] = np.nan
  rb = probes.probe(x, b, groups, "binary", bootstraps=200)
  assert rb["linear"]["auc"] > 0.95 and rb["knn"]["auc"] > 0.7
  assert rb["baseline"]["auc"] == pytest.approx(0.5)
  assert rb["baseline"]["auprc"] == pytest.approx(np.nanmean(b), abs=0.01)


def test_auprc_by_hand():
  scores = np.asarray([0.9, 0.8, 0.7, 0.1])
  labels = np.asarray([1, 0, 1, 0])
  assert probes.auprc(scores, labels) == pytest.approx((1 + 2 / 3) / 2)
  assert probes.auc(scores, labels) == pytest.approx(0.75)


def test_cli_on_an_export_folder(tmp_path):
  import pyarrow as pa
  import pyarrow.parquet as pq
  x, y, groups = _planted(120)
  ids = [f"s{i:03d}" for i in range(120)]
  export = tmp_path / "export"
  export.mkdir()
  pq.write_table(pa.table({"study_id": ids, "row": np.arange(120)}), export / "studies.parquet")
  np.save(export / "study_mean.npy", x.astype(np.float32))
  noise = np.random.default_rng(9).normal(size=x.shape).astype(np.float32)
  np.save(export / "single_frame.npy", noise)  # a level that carries nothing
  with open(tmp_path / "labels.csv", "w") as f:
    f.write("study_id,patient_id,lvef\n")
    for i, s in enumerate(ids):
      f.write(f"{s},p{groups[i]},{y[i] if i % 10 else ''}\n")  # every 10th unlabelled
  run = subprocess.run([sys.executable, "-m", "echoprime_jax.probe", "--export", str(export),
                        "--labels", str(tmp_path / "labels.csv"), "--target", "lvef",
                        "--bootstraps", "100", "--ablation"],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert run.returncode == 0, run.stderr[-2000:]
  out = json.load(open(export / "probes" / "lvef_study_mean.json"))
  assert out["kind"] == "regression" and out["n"] == 108
  assert out["linear"]["mae"] < out["baseline"]["mae"]
  assert os.path.getsize(export / "probes" / "lvef_study_mean.png") > 1000
  assert "linear: mae" in run.stdout
  # the ablation probes every level the export has, side by side
  summary = json.load(open(export / "probes" / "lvef_summary.json"))
  assert set(summary) == {"single_frame", "study_mean"}
  assert summary["study_mean"]["linear"]["mae"] < 0.5 * summary["single_frame"]["linear"]["mae"]
  assert summary["single_frame"]["linear"]["mae"] > 0.8 * summary["single_frame"]["baseline"]["mae"]
  assert "single_frame     linear" in run.stdout
