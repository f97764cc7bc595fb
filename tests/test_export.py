"""`python -m echoprime_jax.export` on the tiny pretraining and MIL runs: files, shapes, the
section embeddings equal the MIL stage's own export, and a rerun reuses the cached pass."""

import json
import os
import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_export_val_split(tiny_pretrain_run, tiny_mil_run, tiny_views_run, demo_shards,
                          tmp_path):
  mil_dir, run = tiny_mil_run
  assert run.returncode == 0, run.stderr[-3000:]
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  cmd = [sys.executable, "-m", "echoprime_jax.export", "--towers", str(tiny_pretrain_run[0]),
         "--data", str(demo_shards), "--split", "val", "--out", str(tmp_path / "out"),
         "--mil", str(mil_dir), "--batch", "16"]
  first = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
  assert first.returncode == 0, first.stderr[-3000:]
  out = tmp_path / "out"
  videos = pq.read_table(out / "videos.parquet").to_pydict()
  studies = pq.read_table(out / "studies.parquet").to_pydict()
  v = np.load(out / "video_embeddings.npy")
  from echoprime_jax.data.shards import ShardIndex
  n_val = len(ShardIndex(str(demo_shards)).studies("val"))
  assert v.shape == (len(videos["study_id"]), 64) and len(studies["study_id"]) == n_val
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
  # the pooling-ablation levels: one video per study (its first A4C) and its frame 0 held still
  single = np.load(out / "single_video.npy")
  rows = np.asarray(studies["single_video_row"])
  np.testing.assert_array_equal(single, v[rows])
  assert all(videos["study_id"][r] == s for r, s in zip(rows, studies["study_id"]))
  a4c = [m for m, r in enumerate(rows) if videos["view"][r] == "A4C"]
  has_a4c = {videos["study_id"][i] for i in range(len(v)) if videos["view"][i] == "A4C"}
  assert len(a4c) == len(has_a4c) > 0
  frame = np.load(out / "single_frame.npy")
  assert frame.shape == single.shape
  np.testing.assert_allclose(np.linalg.norm(frame, axis=1), 1.0, rtol=1e-5)
  assert np.mean(np.sum(frame * single, 1)) < 0.999  # motion matters to the video tower
  assert json.load(open(out / "export.json"))["towers"] == str(tiny_pretrain_run[0])

  # a rerun reuses the towers' pass; with a view classifier it adds the predicted views
  views_dir, views_run = tiny_views_run
  assert views_run.returncode == 0, views_run.stderr[-3000:]
  again = subprocess.run(cmd + ["--views", str(views_dir)], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=600)
  assert again.returncode == 0, again.stderr[-3000:]
  assert "embeddings from the cache" in again.stderr
  videos = pq.read_table(out / "videos.parquet").to_pydict()
  agree = np.mean([p == t for p, t in zip(videos["predicted_view"], videos["view"])])
  assert agree >= 0.9, agree
  probs = np.load(out / "view_probabilities.npy")
  assert probs.shape == (len(v), 11)
  np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
  np.testing.assert_allclose(probs.max(1), videos["view_probability"], atol=1e-6)

  # every pooling level and zero-shot (the export's towers embed the prompts), side by side
  probe = subprocess.run([sys.executable, "-m", "echoprime_jax.probe", "--export", str(out),
                          "--data", str(demo_shards), "--labels", "rules", "--target",
                          "pericardial_effusion", "--ablation", "--zero_shot",
                          "--bootstraps", "50"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
  assert probe.returncode == 0, probe.stderr[-3000:]
  summary = json.load(open(out / "probes" / "pericardial_effusion_summary.json"))
  assert set(summary) == {"single_frame", "single_video", "study_mean", "study_sections",
                          "zero_shot"}
  zs = summary["zero_shot"]
  assert zs["n"] == n_val and zs["scale"] > 1
  assert "zero-shot: mae" in probe.stdout
  # its figure recomputed here: the export's towers embed the built-in prompts, the study
  # means are scored against them, the expected grade against each study's rule label
  from echoprime_jax import parallel
  from echoprime_jax.evaluation import zero_shot
  from echoprime_jax.inference import embeddings, frozen_towers
  from echoprime_jax.retrieval import labels as labels_lib
  mesh = parallel.make_mesh({"data": -1})
  towers = frozen_towers.from_pretrain_run(str(tiny_pretrain_run[0]), 128, mesh)
  spec = zero_shot.load_prompts(zero_shot.DEFAULT_PROMPTS)["pericardial_effusion"]
  classes = zero_shot.class_embeddings(spec, towers.encoder, lambda ids, mask: (
      embeddings.embed_texts(towers.model, ids, mask, batch_size=2, mesh=mesh)))
  scale = float(np.exp(np.asarray(towers.model.log_scale[...])))
  _, prediction = zero_shot.predict(mean, classes, np.asarray(spec["values"], float), scale)
  rules = labels_lib.load_rules()
  by_id = {s.study_id: s.sections for s in ShardIndex(str(demo_shards)).studies("val")}
  y = np.asarray([rules.extract(by_id[s])["pericardial_effusion"] for s in studies["study_id"]])
  keep = ~np.isnan(y)
  assert zs["scale"] == pytest.approx(scale, rel=1e-6)
  assert zs["mae"] == pytest.approx(np.abs(prediction[keep] - y[keep]).mean(), rel=1e-5)
