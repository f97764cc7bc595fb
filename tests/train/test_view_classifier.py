"""View-classifier stage: class weights, metrics, confusion image, and a tiny run that learns."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from data_prep.views import COARSE_VIEWS
from echoprime_jax.inference import view_predictor
from echoprime_jax.train.stages import views as view_classifier

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_inverse_frequency_weights_average_one_over_the_videos():
  labels = np.asarray([0, 0, 0, 1, -1, 2, 2, 2, 2, 2, 2])  # -1: no label; class 3 unseen
  w = view_classifier.class_weights(labels, 4, "inverse_frequency")
  seen = labels[labels >= 0]
  assert float(w[seen].mean()) == pytest.approx(1.0)
  assert w[0] * 3 == pytest.approx(w[1] * 1) == pytest.approx(w[2] * 6)  # each class weighs the same
  assert w[3] == 0
  np.testing.assert_array_equal(view_classifier.class_weights(labels, 4, "none"), np.ones(4))
  with pytest.raises(ValueError, match="balance"):
    view_classifier.class_weights(labels, 4, "sqrt")


def test_metrics_by_hand():
  names = ("a", "b", "c")
  labels = np.asarray([0, 0, 0, 0, 1, 1])
  predicted = np.asarray([0, 0, 0, 1, 1, 2])
  m, confusion = view_classifier.classification_metrics(labels, predicted, names)
  np.testing.assert_array_equal(confusion, [[3, 1, 0], [0, 1, 1], [0, 0, 0]])
  assert m["accuracy"] == pytest.approx(4 / 6)
  assert m["balanced_accuracy"] == pytest.approx((3 / 4 + 1 / 2) / 2)  # class c absent
  # a: precision 1, recall 3/4; b: precision 1/2, recall 1/2
  assert m["f1/a"] == pytest.approx(2 * 0.75 / 1.75)
  assert m["f1/b"] == pytest.approx(0.5)
  assert "f1/c" not in m
  assert m["macro_f1"] == pytest.approx((6 / 7 + 0.5) / 2)


def test_confusion_png_is_an_image(tmp_path):
  confusion = np.eye(len(COARSE_VIEWS), dtype=np.int64) * 5
  confusion[0, 1] = 2
  path = tmp_path / "c.png"
  view_classifier.confusion_png(confusion, COARSE_VIEWS, str(path))
  img = np.asarray(Image.open(path).convert("RGB"))
  assert img.shape[0] > 11 * 28 and img.shape[1] > 11 * 28
  assert (img != 255).any(axis=-1).mean() > 0.05  # something was drawn


def test_tiny_run_classifies_held_out_views(tiny_views_run):
  """ConvNeXt (toy size) on frame 0 of 64x64 clips, 11 views; held-out studies."""
  tmp_path, run = tiny_views_run
  assert run.returncode == 0, run.stderr[-3000:]
  rows = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
  m = {k[4:]: v for k, v in rows[-1].items() if k.startswith("val/")}
  print(json.dumps(m, indent=1))
  assert m["num_videos"] > 150
  assert m["accuracy"] >= 0.95, m
  assert m["balanced_accuracy"] >= 0.95, m
  step = rows[-1]["step"]
  assert (tmp_path / "confusion" / f"step_{step}.png").exists()
  confusion = np.asarray(json.load(open(tmp_path / "confusion" / f"step_{step}.json"))["confusion"])
  assert confusion.sum() == m["num_videos"]
  assert os.path.isdir(tmp_path / "checkpoints" / str(step))


def test_roll_up_sums_the_fine_children():
  logits = np.log(np.asarray([[0.1, 0.2, 0.3, 0.4], [0.7, 0.1, 0.1, 0.1]]))
  coarse_ids = (2, 0, 2, 0)  # fine 0, 2 -> coarse 2; fine 1, 3 -> coarse 0
  p = view_predictor.roll_up(logits, coarse_ids)
  assert p.shape == (2, len(COARSE_VIEWS))
  np.testing.assert_allclose(p[:, [0, 2]], [[0.6, 0.4], [0.2, 0.8]])
  np.testing.assert_allclose(p.sum(1), 1.0)
  lp = view_classifier.coarse_log_probs(logits, coarse_ids)
  np.testing.assert_allclose(np.exp(np.asarray(lp)), p, rtol=1e-5, atol=1e-7)


def _fine_relabelled(shards, out):
  """The shards with every coarse label replaced by its first fine child in the 58-view file
  (A4C -> A4C, Parasternal_Long -> PLAX, Apical_Doppler -> A4C_color_MV, ...): the synthetic
  archive renders the 11 coarse layouts only, so one child each keeps the labels learnable."""
  import pyarrow as pa
  import pyarrow.parquet as pq
  from data_prep import views
  fine = views.fine_taxonomy()
  children = {c: [v for v, p in zip(fine.views, fine.coarse) if p == c]
              for c in views.COARSE_VIEWS}
  out.mkdir()
  for f in shards.iterdir():
    if f.name != "studies.parquet":
      (out / f.name).symlink_to(f)
  rows = pq.read_table(shards / "studies.parquet").to_pylist()
  for row in rows:
    row["views"] = [children[v][0] if v else v for v in row["views"]]
  pq.write_table(pa.Table.from_pylist(rows), out / "studies.parquet")
  return out


def test_fine_taxonomy_run_reports_coarse_views(demo_shards, tmp_path):
  """58-way training on fine labels: held-out fine views, and coarse views by roll-up."""
  shards = _fine_relabelled(demo_shards, tmp_path / "fine_shards")
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  run = subprocess.run(
      [sys.executable, "-m", "echoprime_jax.train", "--config", "configs/views.py:tiny",
       "--workdir", str(tmp_path / "run"), f"--config.data.dir={shards}",
       "--config.taxonomy=fine", "--config.total_steps=250", "--config.eval_every=250"],
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
  assert run.returncode == 0, run.stderr[-3000:]
  rows = [json.loads(line) for line in open(tmp_path / "run" / "metrics.jsonl")]
  m = {k[4:]: v for k, v in rows[-1].items() if k.startswith("val/")}
  print(json.dumps({k: v for k, v in m.items() if "f1/" not in k}, indent=1))
  assert m["coarse/num_videos"] == m["num_videos"] > 150
  # Measured after 250 steps on the demo's archive (160 studies, 2026-12-02): fine accuracy
  # 0.85, coarse (roll-up) 0.86 (0.81 / 0.83 on the earlier 100-study one); chance 1/11. (The
  # 11-way run reaches 0.96 in 200 steps: 47 never-seen classes dilute the early steps.)
  assert m["accuracy"] >= 0.7, m
  assert m["coarse/accuracy"] >= 0.75 and m["coarse/accuracy"] >= m["accuracy"], m
  assert "f1/PLAX" in m and "f1/A4C_color_MV" in m  # fine class names
  confusion = json.load(open(tmp_path / "run" / "confusion" / "step_250.json"))
  assert len(confusion["views"]) == 58
  assert (tmp_path / "run" / "confusion" / "coarse_step_250.png").exists()
