"""Bootstrap confidence intervals over held-out studies.

A figure measured on M held-out studies moves with which M studies were drawn; the interval
says how far. Studies are resampled with replacement (all of a study's queries, videos or
sections go together: they are not independent) and the figure is recomputed; the interval is
the percentile range of those resamples (`level` 0.95: the 2.5th to 97.5th).
"""

from __future__ import annotations

from typing import Callable

import numpy as np

RESAMPLES = 2000  # the percentile ends move by < 0.005 between seeds at M = 80


def resampled_studies(num_studies: int, resamples: int = RESAMPLES, seed: int = 0
                      ) -> np.ndarray:
  """(resamples, num_studies) study indices drawn with replacement."""
  if num_studies < 1:
    raise ValueError("no studies to resample")
  return np.random.default_rng(seed).integers(0, num_studies, (resamples, num_studies))


def _percentiles(draws: np.ndarray, level: float) -> tuple[float, float]:
  draws = draws[~np.isnan(draws)]
  if not len(draws):
    return float("nan"), float("nan")
  tail = 50 * (1 - level)
  lo, hi = np.percentile(draws, [tail, 100 - tail])
  return float(lo), float(hi)


def mean_interval(values: np.ndarray, groups: np.ndarray | None = None, *,
                  resamples: int = RESAMPLES, seed: int = 0, level: float = 0.95
                  ) -> tuple[float, float]:
  """Interval of the mean of `values` (N,) (NaN entries are left out, as the figure leaves
  them out), resampling the studies in `groups` (N,) (None: each value is its own study)."""
  values = np.asarray(values, np.float64)
  groups = np.arange(len(values)) if groups is None else np.asarray(groups)
  keep = ~np.isnan(values)
  _, study = np.unique(groups[keep], return_inverse=True)
  sums = np.bincount(study, values[keep])  # per study
  counts = np.bincount(study).astype(np.float64)
  draw = resampled_studies(len(sums), resamples, seed)
  with np.errstate(invalid="ignore"):
    means = sums[draw].sum(1) / counts[draw].sum(1)
  return _percentiles(means, level)


def statistic_interval(statistic: Callable[[np.ndarray], float], num_studies: int, *,
                       resamples: int = RESAMPLES, seed: int = 0, level: float = 0.95
                       ) -> tuple[float, float]:
  """Interval of any figure: statistic(study indices (M,) with repeats) -> float (NaN when a
  resample cannot give one, e.g. an AUC without both classes; those are left out)."""
  draws = np.asarray([statistic(i) for i in resampled_studies(num_studies, resamples, seed)],
                     np.float64)
  return _percentiles(draws, level)
