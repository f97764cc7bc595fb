"""PNG charts of the demo, the probes and the view classifier, drawn with matplotlib.

matplotlib is imported inside the functions (training code imports this module and must not pay
for it) and only through its object-oriented API: a `Figure` on its own Agg canvas, no `pyplot`,
so there is no global figure registry to leak into and no backend to switch. Every function
saves the PNG and returns the Figure, so tests can check ticks, labels and legends directly.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
  from matplotlib.figure import Figure

DPI = 120  # PNG resolution: sharp text without multi-megabyte files
_GRID = {"alpha": 0.3, "linewidth": 0.6}


def _figure(width_in: float, height_in: float) -> Figure:
  """A Figure bound to its own Agg canvas (no pyplot, no global state)."""
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  from matplotlib.figure import Figure
  fig = Figure(figsize=(width_in, height_in), dpi=DPI)
  FigureCanvasAgg(fig)
  return fig


def _save(fig: Figure, path: str) -> Figure:
  # "tight" grows the image to whatever sticks out (an outside legend, rotated names)
  fig.savefig(path, dpi=DPI, bbox_inches="tight", pad_inches=0.1, facecolor="white")
  return fig


def _no_data(ax, message: str = "no data") -> None:
  ax.text(0.5, 0.5, message, transform=ax.transAxes, ha="center", va="center",
          fontsize=12, color="0.4")


def line_chart(series: dict[str, tuple[Sequence[float], Sequence[float]]], path: str,
               title: str, xlabel: str = "step", ylabel: str = "",
               dashed: tuple[str, ...] = (), ylim: tuple[float, float] | None = None, *,
               size: tuple[int, int] = (640, 400)) -> Figure:
  """{name: (xs, ys)} -> a PNG with one line per series; -> the Figure.

  Non-finite points are dropped (a NaN metric must not hide the rest of its curve); series
  named in `dashed` (baselines, chance) are drawn dashed; the legend sits right of the axes so
  it never covers a curve. `size` is the plot's size in pixels before the legend is added."""
  fig = _figure(size[0] / DPI, size[1] / DPI)
  ax = fig.add_subplot()
  drawn = 0
  for name, (xs, ys) in series.items():
    x, y = np.asarray(xs, np.float64).ravel(), np.asarray(ys, np.float64).ravel()
    n = min(len(x), len(y))
    keep = np.isfinite(x[:n]) & np.isfinite(y[:n])
    x, y = x[:n][keep], y[:n][keep]
    if not len(x):
      continue
    drawn += 1
    ax.plot(x, y, label=name, linestyle="--" if name in dashed else "-", linewidth=1.6,
            marker="o" if len(x) <= 30 else None, markersize=3)
  ax.set_title(title)
  ax.set_xlabel(xlabel)
  ax.set_ylabel(ylabel)
  ax.grid(True, **_GRID)
  if ylim is not None:
    ax.set_ylim(*ylim)
  if drawn:
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, frameon=False)
  else:
    _no_data(ax)
  return _save(fig, path)


def scatter_chart(true: Sequence[float], predicted: Sequence[float], path: str, title: str,
                  unit: str = "") -> Figure:
  """True vs predicted values of a regression probe, the identity line and the MAE; -> Figure.

  Both axes share one range (equal aspect), so distance from the identity line is the error."""
  t, p = np.asarray(true, np.float64).ravel(), np.asarray(predicted, np.float64).ravel()
  keep = np.isfinite(t) & np.isfinite(p)
  t, p = t[keep], p[keep]
  suffix = f" ({unit})" if unit else ""
  fig = _figure(5.2, 5.2)
  ax = fig.add_subplot()
  ax.set_title(title)
  ax.set_xlabel("true value" + suffix)
  ax.set_ylabel("predicted value" + suffix)
  ax.grid(True, **_GRID)
  if not len(t):
    _no_data(ax)
    return _save(fig, path)
  lo, hi = float(min(t.min(), p.min())), float(max(t.max(), p.max()))
  pad = 0.05 * (hi - lo) if hi > lo else max(abs(lo) * 0.05, 1.0)
  lo, hi = lo - pad, hi + pad
  mae = float(np.mean(np.abs(p - t)))
  ax.plot([lo, hi], [lo, hi], linestyle="--", color="0.45", linewidth=1.2,
          label="identity (prediction = truth)")
  ax.scatter(t, p, s=14, alpha=0.6, color="C0", edgecolors="none",
             label=f"studies (n={len(t)}), MAE {mae:.3g}{' ' + unit if unit else ''}")
  ax.set_xlim(lo, hi)
  ax.set_ylim(lo, hi)
  ax.set_aspect("equal")
  ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), frameon=False)
  return _save(fig, path)


def roc_curve(y: Sequence[float], score: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
  """-> (false positive rates, true positive rates) from (0, 0) to (1, 1), one step per
  distinct score (tied scores move both rates at once, as the AUC counts them)."""
  y, s = np.asarray(y, np.float64).ravel(), np.asarray(score, np.float64).ravel()
  keep = np.isfinite(y) & np.isfinite(s)
  order = np.argsort(-s[keep], kind="stable")
  y, s = y[keep][order], s[keep][order]
  last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1].astype(int) if len(s) else []
  tp, fp = np.cumsum(y == 1)[last], np.cumsum(y == 0)[last]
  return (np.r_[0.0, fp / max(fp[-1], 1)] if len(fp) else np.zeros(1),
          np.r_[0.0, tp / max(tp[-1], 1)] if len(tp) else np.zeros(1))


def roc_chart(y: Sequence[float], score: Sequence[float], path: str, title: str, auc: float,
              auc_ci: tuple[float, float] | None = None) -> Figure:
  """The ROC curve of a binary probe against the chance diagonal, AUC (95% CI) in the legend;
  -> Figure. A curve needs both classes: with one, the axes say so instead."""
  yy = np.asarray(y, np.float64).ravel()
  fig = _figure(5.2, 5.2)
  ax = fig.add_subplot()
  ax.set_title(title)
  ax.set_xlabel("false positive rate")
  ax.set_ylabel("true positive rate")
  ax.set_xlim(0.0, 1.0)
  ax.set_ylim(0.0, 1.0)
  ax.set_aspect("equal")
  ax.grid(True, **_GRID)
  ax.plot([0, 1], [0, 1], linestyle="--", color="0.45", linewidth=1.2, label="chance (AUC 0.5)")
  if not ((yy == 1).any() and (yy == 0).any()):
    _no_data(ax, "no data: needs positives and negatives")
  else:
    fpr, tpr = roc_curve(yy, score)
    label = f"linear probe, AUC {auc:.3f}" if math.isfinite(auc) else "linear probe, AUC n/a"
    if auc_ci is not None and all(math.isfinite(v) for v in auc_ci):
      label += f" (95% CI {auc_ci[0]:.3f}-{auc_ci[1]:.3f})"
    # clip_on=False: the curve often runs along the frame (fpr 0, tpr 1) and must stay visible
    ax.plot(fpr, tpr, color="C0", linewidth=2.0, label=label, clip_on=False, zorder=3)
  ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), frameon=False)
  return _save(fig, path)


def confusion_chart(confusion: np.ndarray, names: Sequence[str], path: str,
                    title: str = "view confusion (rows: true view, columns: predicted)"
                    ) -> Figure:
  """A row-normalised confusion matrix: colour = fraction of the true view, each non-zero
  cell's count written on it; -> Figure. Cells, fonts and figure scale with the number of
  classes so 11 views read comfortably and 58 stay legible."""
  counts = np.asarray(confusion)
  k = len(names)
  if counts.shape != (k, k):
    raise ValueError(f"confusion is {counts.shape}, expected ({k}, {k}) for {k} names")
  rows = counts / np.maximum(counts.sum(1, keepdims=True), 1)
  cell = 0.5 if k <= 16 else 0.3  # inches per cell
  font = 9 if k <= 16 else 5.5
  side = max(k * cell, 3.0)
  fig = _figure(side + 1.6, side)
  ax = fig.add_subplot()
  image = ax.imshow(rows, cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest")
  # the colour bar in axes coordinates: as tall as the (square) matrix, ~0.2 in wide
  width, gap = 0.2 / side, 0.12 / side
  bar = fig.colorbar(image, cax=ax.inset_axes((1 + gap, 0.0, width, 1.0)))
  bar.set_label("fraction of the true view")
  for i, j in zip(*np.nonzero(counts)):
    ax.text(j, i, str(int(counts[i, j])), ha="center", va="center", fontsize=font,
            color="white" if rows[i, j] > 0.5 else "black")
  rotate = ({"rotation": 45, "ha": "right", "rotation_mode": "anchor"} if k <= 16
            else {"rotation": 90})
  ax.set_xticks(np.arange(k), labels=list(names), fontsize=font + 1, **rotate)
  ax.set_yticks(np.arange(k), labels=list(names), fontsize=font + 1)
  ax.set_xlabel("predicted view")
  ax.set_ylabel("true view")
  ax.set_title(title)
  ax.set_xticks(np.arange(k + 1) - 0.5, minor=True)  # thin cell borders
  ax.set_yticks(np.arange(k + 1) - 0.5, minor=True)
  ax.grid(which="minor", color="white", linewidth=0.5)
  ax.tick_params(which="minor", length=0)
  return _save(fig, path)
