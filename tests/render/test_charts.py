"""Charts: each one writes a PNG that decodes, and its Figure proves it is readable (tick labels
with text, titles, axis labels, legend entries, a legend clear of the data, counts written on
the confusion matrix) without anyone eyeballing it."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from data_prep.views import COARSE_VIEWS
from echoprime_jax.evaluation import export_probes as probe
from echoprime_jax.render import charts as plots

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _png(path, min_w=300, min_h=250) -> np.ndarray:
  img = np.asarray(Image.open(path).convert("RGB"))
  assert img.shape[1] >= min_w and img.shape[0] >= min_h, img.shape
  assert img.shape[0] < 6000 and img.shape[1] < 6000, img.shape
  assert (img != 255).any(axis=-1).mean() > 0.02  # something was drawn
  return img


def _ticks(ax) -> tuple[list[str], list[str]]:
  return ([t.get_text() for t in ax.get_xticklabels() if t.get_text()],
          [t.get_text() for t in ax.get_yticklabels() if t.get_text()])


def _readable_axes(ax, title, xlabel, ylabel) -> None:
  xs, ys = _ticks(ax)
  assert len(xs) >= 3 and len(ys) >= 3, (xs, ys)
  assert ax.get_title() == title
  assert ax.get_xlabel() == xlabel and ax.get_ylabel() == ylabel


def _legend(ax) -> list[str]:
  legend = ax.get_legend()
  assert legend is not None
  return [t.get_text() for t in legend.get_texts()]


def _overlaps(a, b) -> bool:
  return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


def _recall_series():
  steps = [0, 100, 200, 300, 400, 500]
  return {"val R@10": (steps, [0.1, 0.3, 0.45, 0.55, 0.6, 0.62]),
          "val R@1": (steps, [0.02, 0.08, 0.15, float("nan"), 0.22, 0.25]),
          "chance R@10": (steps, [0.05] * 6)}


def test_line_chart_is_labelled_with_the_legend_outside_the_data(tmp_path):
  path = tmp_path / "recall.png"
  fig = plots.line_chart(_recall_series(), str(path), "pretraining: retrieval",
                         xlabel="training step", ylabel="recall (fraction of held-out studies)",
                         dashed=("chance R@10",), ylim=(0.0, 1.0))
  _png(path, 500, 300)
  ax, = fig.axes
  _readable_axes(ax, "pretraining: retrieval", "training step",
                 "recall (fraction of held-out studies)")
  assert ax.get_ylim() == (0.0, 1.0)
  assert _legend(ax) == ["val R@10", "val R@1", "chance R@10"]
  styles = {line.get_label(): line.get_linestyle() for line in ax.get_lines()}
  assert styles == {"val R@10": "-", "val R@1": "-", "chance R@10": "--"}
  # the NaN point is dropped, the rest of the curve stays
  r1 = next(line for line in ax.get_lines() if line.get_label() == "val R@1")
  assert list(r1.get_xdata()) == [0, 100, 200, 400, 500]
  renderer = fig.canvas.get_renderer()
  assert not _overlaps(ax.get_legend().get_window_extent(renderer),
                       ax.get_window_extent(renderer))


def test_line_chart_keeps_the_old_call_working(tmp_path):
  """The demo's original call: positional series, path, title; default x label."""
  path = tmp_path / "loss.png"
  fig = plots.line_chart({"training loss": ([1, 2, 3, 4], [4.2, 3.1, 2.5, 2.2])}, str(path),
                         "pretraining: contrastive loss")
  _png(path)
  ax, = fig.axes
  _readable_axes(ax, "pretraining: contrastive loss", "step", "")
  assert _legend(ax) == ["training loss"]


@pytest.mark.parametrize("series", [{}, {"loss": ([], [])},
                                    {"loss": ([1, 2], [float("nan"), float("inf")])}])
def test_line_chart_without_data_says_so(tmp_path, series):
  path = tmp_path / "empty.png"
  fig = plots.line_chart(series, str(path), "nothing yet")
  _png(path, 200, 150)
  ax, = fig.axes
  assert "no data" in [t.get_text() for t in ax.texts]
  assert ax.get_title() == "nothing yet"


def test_scatter_chart_has_values_identity_and_mae(tmp_path):
  rng = np.random.default_rng(0)
  true = rng.uniform(25, 70, 80)
  pred = true + rng.normal(0, 4, 80)
  pred[3] = np.nan  # a missing prediction is left out, not fatal
  path = tmp_path / "lvef.png"
  fig = plots.scatter_chart(true, pred, str(path), "lvef (study_mean)", unit="%")
  _png(path)
  ax, = fig.axes
  _readable_axes(ax, "lvef (study_mean)", "true value (%)", "predicted value (%)")
  assert ax.get_xlim() == ax.get_ylim()
  keep = np.isfinite(pred)
  mae = np.mean(np.abs(pred[keep] - true[keep]))
  entries = _legend(ax)
  assert entries[0] == "identity (prediction = truth)"
  assert entries[1] == f"studies (n=79), MAE {mae:.3g} %"
  identity, = [line for line in ax.get_lines() if line.get_label().startswith("identity")]
  np.testing.assert_array_equal(identity.get_xdata(), identity.get_ydata())
  lo, hi = ax.get_xlim()
  assert identity.get_xdata()[0] == lo and identity.get_xdata()[-1] == hi
  # the data sit inside the limits
  assert lo < min(true.min(), np.nanmin(pred)) and hi > max(true.max(), np.nanmax(pred))


def test_scatter_chart_without_data_says_so(tmp_path):
  fig = plots.scatter_chart([np.nan], [1.0], str(tmp_path / "s.png"), "empty")
  assert "no data" in [t.get_text() for t in fig.axes[0].texts]


def test_roc_curve_steps_once_per_distinct_score():
  fpr, tpr = plots.roc_curve([1, 0, 1, 0], [0.9, 0.5, 0.5, 0.1])
  np.testing.assert_allclose(fpr, [0, 0, 0.5, 1])
  np.testing.assert_allclose(tpr, [0, 0.5, 1, 1])


def test_roc_chart_has_chance_diagonal_and_auc(tmp_path):
  rng = np.random.default_rng(1)
  y = (rng.random(200) < 0.3).astype(float)
  score = y * 1.5 + rng.normal(size=200)
  path = tmp_path / "roc.png"
  fig = plots.roc_chart(y, score, str(path), "amyloid: ROC", 0.912, (0.871, 0.948))
  _png(path)
  ax, = fig.axes
  _readable_axes(ax, "amyloid: ROC", "false positive rate", "true positive rate")
  assert ax.get_xlim() == (0.0, 1.0) and ax.get_ylim() == (0.0, 1.0)
  assert _legend(ax) == ["chance (AUC 0.5)",
                         "linear probe, AUC 0.912 (95% CI 0.871-0.948)"]
  chance, = [line for line in ax.get_lines() if line.get_label().startswith("chance")]
  assert list(chance.get_xdata()) == [0, 1] and list(chance.get_ydata()) == [0, 1]
  curve, = [line for line in ax.get_lines() if "AUC 0.912" in line.get_label()]
  x, t = curve.get_xdata(), curve.get_ydata()
  assert (x[0], t[0], x[-1], t[-1]) == (0, 0, 1, 1)
  assert (np.diff(x) >= 0).all() and (np.diff(t) >= 0).all()
  assert np.trapezoid(t, x) > 0.7  # the curve drawn matches a good classifier


def test_roc_chart_without_both_classes_says_so(tmp_path):
  fig = plots.roc_chart([1, 1, 1], [0.2, 0.4, 0.9], str(tmp_path / "r.png"), "one class",
                        float("nan"))
  ax, = fig.axes
  assert any(t.get_text().startswith("no data") for t in ax.texts)
  assert _legend(ax) == ["chance (AUC 0.5)"]


def _confusion(k, seed=0):
  rng = np.random.default_rng(seed)
  c = np.diag(rng.integers(5, 200, k))
  c[rng.integers(0, k, 3 * k), rng.integers(0, k, 3 * k)] += rng.integers(1, 9, 3 * k)
  c[1] = 0  # a view never seen in evaluation
  return c


@pytest.mark.parametrize("k", [11, 58])
def test_confusion_chart_writes_counts_names_and_colorbar(tmp_path, k):
  names = list(COARSE_VIEWS) if k == 11 else [f"fine_view_{i:02d}" for i in range(k)]
  counts = _confusion(k)
  path = tmp_path / "confusion.png"
  fig = plots.confusion_chart(counts, names, str(path))
  img = _png(path, 40 * k if k == 11 else 25 * k, 35 * k if k == 11 else 25 * k)
  ax = fig.axes[0]
  bar = ax.images[0].colorbar
  assert bar is not None and bar.ax.get_ylabel() == "fraction of the true view"
  assert (bar.vmin, bar.vmax) == (0.0, 1.0)
  assert ax.get_xlabel() == "predicted view" and ax.get_ylabel() == "true view"
  assert _ticks(ax) == (names, names)
  assert ax.get_xticklabels()[0].get_rotation() in (45, 90)
  written = sorted(int(t.get_text()) for t in ax.texts)
  assert written == sorted(int(v) for v in counts[counts > 0])
  # dark cells (most of their row) get white text, light cells black
  rows = counts / np.maximum(counts.sum(1, keepdims=True), 1)
  colours = {t.get_position(): t.get_color() for t in ax.texts}  # (column, row): colour
  assert set(colours.values()) == {"white", "black"}
  for (j, i), colour in colours.items():
    assert colour == ("white" if rows[i, j] > 0.5 else "black")
  assert img.shape[1] < 4000


def test_confusion_png_delegates(tmp_path):
  """The view stage's confusion_png keeps its signature and draws through render.charts."""
  from echoprime_jax.train.stages import views as view_classifier
  counts = _confusion(11)
  path = tmp_path / "c.png"
  assert view_classifier.confusion_png(counts, COARSE_VIEWS, str(path)) is None
  _png(path, 440, 385)


def test_probe_plots_route_by_kind(tmp_path):
  rng = np.random.default_rng(2)
  y = rng.uniform(30, 70, 50)
  regression = {"kind": "regression", "predictions": {"y": y, "linear": y + rng.normal(0, 3, 50)},
                "linear": {"mae": 2.4, "mae_ci": (2.0, 2.9)}}
  probe._plot(regression, str(tmp_path / "lvef.png"), "lvef (study_mean)")
  _png(tmp_path / "lvef.png")
  b = (rng.random(60) < 0.5).astype(float)
  binary = {"kind": "binary", "predictions": {"y": b, "linear": b + rng.normal(0, 0.7, 60)},
            "linear": {"auc": 0.83, "auc_ci": (0.72, 0.92), "auprc": 0.8}}
  probe._plot(binary, str(tmp_path / "amyloid.png"), "amyloid (study_mean)")
  _png(tmp_path / "amyloid.png")


def test_no_pyplot_and_matplotlib_only_when_drawing(tmp_path):
  """Importing plots costs nothing; drawing uses the Agg canvas without pyplot or a global
  backend switch."""
  code = f"""
import json, sys
from echoprime_jax.render import charts as plots
before = "matplotlib" in sys.modules
plots.line_chart({{"a": ([0, 1, 2], [1, 2, 3])}}, {str(tmp_path / "a.png")!r}, "t")
import matplotlib
print(json.dumps({{"before": before, "pyplot": "matplotlib.pyplot" in sys.modules}}))
"""
  run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                       check=False, timeout=120, env={**os.environ, "MPLBACKEND": "module://nonexistent"})
  assert run.returncode == 0, run.stderr[-2000:]
  assert json.loads(run.stdout.strip().splitlines()[-1]) == {"before": False, "pyplot": False}
  _png(tmp_path / "a.png", 200, 150)
