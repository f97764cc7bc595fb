"""View-classifier stage: class weights, metrics, confusion image, and a tiny run that learns."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from data_prep.views import COARSE_VIEWS
from echoprime_jax.train import view_classifier

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


def test_tiny_run_classifies_held_out_views(synthetic_100, tmp_path):
  """ConvNeXt (toy size) on frame 0 of 64x64 clips, 11 views; held-out studies."""
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  run = subprocess.run(
      [sys.executable, "-m", "echoprime_jax.train", "--config", "configs/views.py:tiny",
       "--workdir", str(tmp_path), f"--config.data.dir={synthetic_100}"],
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
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
