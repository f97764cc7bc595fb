"""Retrieval evaluation: the random-neighbour baseline is the exact expectation of random
composition (checked against many random draws), and a perfect retriever scores 1."""

import numpy as np

from echoprime_jax.evaluation import retrieval_figures as evaluate
from echoprime_jax.retrieval import report_composer
from tests.retrieval.test_report_composer import SECTIONS, _db


def test_random_baseline_is_the_expectation_of_random_compositions():
  db = _db()
  truth_reports = [
      {"Left Ventricle": "Ejection fraction is 45%.", "Left Atrium": "Normal left atrial size.",
       "Pericardium": "No pericardial effusion."},
      {"Left Ventricle": "Ejection fraction is 58%.",
       "Left Atrium": "The left atrium is severely dilated.",
       "Pericardium": "There is a mild pericardial effusion."},
  ]
  truth = db.rules.table(truth_reports)
  exact = {k: float(np.nanmean(v)) for k, v in evaluate._random_agreement(db, truth).items()}
  # by hand: LV pool = candidates 0 (EF 60) and 1 (EF 20); truths 45 (mildly reduced), 58
  assert exact["report/lvef_band_accuracy"] == 0.25  # only 58 vs 60 agree: 1 of 4 pairs
  np.testing.assert_allclose(exact["report/lvef_mae"], (15 + 25 + 2 + 38) / 4)
  # effusion: pool 0 none, 1 severe, 2 mild; truths none, mild -> 2 of 6 pairs agree
  np.testing.assert_allclose(exact["report/pericardial_effusion_accuracy"], 2 / 6)

  rng = np.random.default_rng(0)
  draws = []
  for _ in range(4000):
    nbrs = rng.integers(0, len(db), (2, len(SECTIONS), 8))
    composed = report_composer.compose(nbrs, db, SECTIONS)
    draws.append(evaluate._agreement(db, [c["sections"] for c in composed], truth))
  for key, value in exact.items():
    np.testing.assert_allclose(np.mean([np.nanmean(d[key]) for d in draws]), value, rtol=0.02,
                               atol=0.02, err_msg=key)


def test_perfect_retrieval_states_every_label_right():
  db = _db()
  # each section's query points at candidate 1's own embedding: its report is the truth
  q = np.zeros((1, len(SECTIONS), 8), np.float32)
  q[0, :, 1] = 1.0
  m = evaluate.evaluate(db, q, SECTIONS, [db.sections[1]], k=1, match="report")
  assert m["report/lvef_band_accuracy"] == 1.0 and m["report/lvef_mae"] == 0.0
  assert m["report/pericardial_effusion_accuracy"] == 1.0
  assert m["random_report/lvef_band_accuracy"] == 0.5  # EF 20 matches candidate 1 only


def test_figures_are_the_means_of_the_per_query_outcomes():
  db = _db()
  rng = np.random.default_rng(1)
  q = rng.normal(size=(5, len(SECTIONS), 8)).astype(np.float32)
  q /= np.linalg.norm(q, axis=-1, keepdims=True)
  truth = [db.sections[i % len(db)] for i in range(5)]
  outcomes = evaluate.per_query(db, q, SECTIONS, truth, k=2, match="report")
  figures = evaluate.evaluate(db, q, SECTIONS, truth, k=2, match="report")
  assert all(len(v) == 5 for v in outcomes.values())
  for key, value in outcomes.items():
    if key in figures:
      np.testing.assert_allclose(figures[key], np.nanmean(value), err_msg=key)
  assert figures["queries"] == 5 and figures["candidates"] == len(db)
