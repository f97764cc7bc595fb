"""`python -m echoprime_jax.export` on the tiny pretraining and MIL runs: files, shapes, the
section embeddings equal the MIL stage's own export, and a rerun reuses the cached pass."""

import json
import os
import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_export_val_split(tiny_pretrain_run, tiny_mil_run, synthetic_100, tmp_path):
  mil_dir, run = tiny_mil_run
  assert run.returncode == 0, run.stderr[-3000:]
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  cmd = [sys.executable, "-m", "echoprime_jax.export", "--towers", str(tiny_pretrain_run[0]),
         "--data", str(synthetic_100), "--split", "val", "--out", str(tmp_path / "out"),
         "--mil", str(mil_dir), "--batch", "16"]
  first = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
  assert first.returncode == 0, first.stderr[-3000:]
  out = tmp_path / "out"
  videos = pq.read_table(out / "videos.parquet").to_pydict()
  studies = pq.read_table(out / "studies.parquet").to_pydict()
  v = np.load(out / "video_embeddings.npy")
  assert v.shape == (len(videos["study_id"]), 64) and len(studies["study_id"]) == 44
  np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, rtol=1e-5)
  assert sum(studies["num_videos"]) == len(v)
  assert all(s.startswith("study_") is False for s in studies["study_id"])  # pseudonyms only
  sections = np.load(out / "study_sections.npy")
  assert json.load(open(out / "sections.json"))[0] == "Left Ventricle"
  # the same towers, aggregator and data as the MIL stage's own export of this split
  ref = np.load(mil_dir / "export" / "val_sections.npz")
  assert list(ref["study_ids"]) == studies["study_id"]
  np.testing.assert_allclose(sections, ref["section_embedding"], atol=1e-5)
  mean = np.load(out / "study_mean.npy")
  np.testing.assert_allclose(np.linalg.norm(mean, axis=1), 1.0, rtol=1e-5)
  again = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
  assert again.returncode == 0, again.stderr[-3000:]
  assert "embeddings from the cache" in again.stderr
