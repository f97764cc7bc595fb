"""Bootstrap intervals over studies: the right width, the right coverage, studies resampled as
units, NaN outcomes left out as the figures leave them out."""

import numpy as np
import pytest

from echoprime_jax.evaluation import bootstrap
from echoprime_jax.evaluation.probes import auc


def test_width_of_a_proportion_matches_its_standard_error():
  values = np.r_[np.ones(200), np.zeros(200)]
  lo, hi = bootstrap.mean_interval(values)
  # +-1.96 standard errors of p = 0.5 at n = 400: 0.098 wide; 2000 resamples put the ends
  # within ~0.005 of it
  assert hi - lo == pytest.approx(2 * 1.96 * np.sqrt(0.25 / 400), abs=0.01)
  assert lo < 0.5 < hi


def test_95_percent_intervals_cover_the_truth_about_95_percent_of_the_time():
  rng = np.random.default_rng(0)
  covered = [lo <= 0.3 <= hi for lo, hi in (
      bootstrap.mean_interval(rng.random(80) < 0.3, resamples=1000, seed=i) for i in range(200))]
  # 200 experiments: binomial sd of the coverage 0.015; the percentile bootstrap runs slightly
  # below nominal at n = 80
  assert 0.88 <= np.mean(covered) <= 0.99


def test_a_study_is_resampled_whole():
  rng = np.random.default_rng(1)
  per_study = rng.random(60)
  repeated = np.repeat(per_study, 5)  # five queries per study, all alike
  studies = np.repeat(np.arange(60), 5)
  grouped = bootstrap.mean_interval(repeated, studies, seed=3)
  np.testing.assert_allclose(grouped, bootstrap.mean_interval(per_study, seed=3), atol=1e-12)
  # treating the 300 queries as independent would claim a sqrt(5) narrower interval
  naive = bootstrap.mean_interval(repeated, seed=3)
  assert (grouped[1] - grouped[0]) > 1.8 * (naive[1] - naive[0])


def test_nan_outcomes_are_left_out():
  values = np.r_[np.ones(30), np.zeros(30), np.full(40, np.nan)]
  lo, hi = bootstrap.mean_interval(values)
  assert lo < 0.5 < hi and hi - lo > 0.2  # n = 60, not 100
  assert bootstrap.mean_interval(values) == bootstrap.mean_interval(values[:60])


def test_any_statistic_and_resamples_without_a_value():
  rng = np.random.default_rng(2)
  y = (rng.random(50) < 0.2).astype(float)
  score = y + rng.normal(0, 0.8, 50)
  stat = lambda i: auc(score[i], y[i]) if 0 < y[i].sum() < len(i) else float("nan")  # noqa
  lo, hi = bootstrap.statistic_interval(stat, 50, resamples=500)
  assert lo < auc(score, y) < hi and 0.5 < hi <= 1.0
  with pytest.raises(ValueError):
    bootstrap.resampled_studies(0)
