"""How good are retrieved reports and kNN measurements? Against the truth of held-out studies
and a random-neighbour baseline (its exact expectation over the candidates), in one call.

Report agreement: labels are extracted (same rules) from the composed report and compared with
the labels of the study's true report (baseline: the exact expectation when each section is
copied from a random candidate having it): LVEF by band (normal >= 53, mildly reduced 40-52,
moderately 30-39, severely < 30, the synthetic archive's wording) and absolute error; binary
labels by accuracy; severities by exact grade. Measurements: kNN regression MAE against
predicting the candidates' mean; binary AUC; severity grade accuracy against always predicting
the candidates' most common grade. `evaluate_database`: a MIL run's held-out split querying a
candidate database (`python -m echoprime_jax.index evaluate`), per held-out study.
"""

from __future__ import annotations

import csv
import os

import numpy as np

from echoprime_jax.evaluation.probes import auc
from echoprime_jax.retrieval import labels as labels_lib
from echoprime_jax.retrieval import report_composer
from echoprime_jax.retrieval.database import CandidateDatabase

LVEF_BANDS = (53.0, 40.0, 30.0)  # lower edges of normal / mildly / moderately reduced


def own_rank(sim: np.ndarray) -> np.ndarray:
  """sim (Q, Q), query i's own candidate in column i -> (Q,) its 0-based rank among the
  candidates (ties broken by column, as argsort does): a hit at k is rank < k."""
  order = np.argsort(-sim, axis=1)
  return np.argmax(order == np.arange(len(sim))[:, None], axis=1)


def lvef_band(value: np.ndarray) -> np.ndarray:
  """0 normal, 1 mildly, 2 moderately, 3 severely reduced; -1 for NaN."""
  value = np.asarray(value, np.float64)
  band = np.select([value >= LVEF_BANDS[0], value >= LVEF_BANDS[1], value >= LVEF_BANDS[2]],
                   [0, 1, 2], 3)
  return np.where(np.isnan(value), -1, band)


def _agreement(db: CandidateDatabase, generated: list[dict[str, str]],
               truth: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """Per query (Q,): 1 / 0 agreement (absolute error for `_mae`), NaN where the truth is
  silent (or, for the error, the composed report is)."""
  got = db.rules.table(generated)
  out = {}
  for rule in db.rules.rules:
    t, g = truth[rule.name], got[rule.name]
    ok = ~np.isnan(t)
    if not ok.any():
      continue
    if rule.mode == "regression":
      out[f"report/{rule.name}_band_accuracy"] = np.where(
          ok, lvef_band(t) == lvef_band(g), np.nan)
      out[f"report/{rule.name}_mae"] = np.abs(t - g)  # NaN where either is
    else:
      out[f"report/{rule.name}_accuracy"] = np.where(ok, t == g, np.nan)
  return out


def _random_agreement(db: CandidateDatabase, truth: dict[str, np.ndarray]
                      ) -> dict[str, np.ndarray]:
  """Per query, the agreement `_agreement` expects when every section is copied from a
  uniformly random candidate having it: exact, averaged over all candidates (one random draw
  of 42 queries moves by +-0.08, as much as the effects it is the baseline for)."""
  out = {}
  for rule in db.rules.rules:
    t = truth[rule.name]
    ok = ~np.isnan(t)
    pool = db.labels[rule.name][db.has_section(rule.section)]  # NaN: section silent on it
    if not ok.any() or not len(pool):
      continue
    t = t[:, None]
    if rule.mode == "regression":
      agree = (lvef_band(t) == lvef_band(pool)[None]).mean(1)
      out[f"report/{rule.name}_band_accuracy"] = np.where(ok, agree, np.nan)
      stated = pool[~np.isnan(pool)][None]
      out[f"report/{rule.name}_mae"] = np.where(ok, np.abs(t - stated).mean(1), np.nan)
    else:
      out[f"report/{rule.name}_accuracy"] = np.where(ok, (t == pool[None]).mean(1), np.nan)
  return out


def per_query(db: CandidateDatabase, queries: np.ndarray, section_names: tuple[str, ...],
              truth_sections: list[dict[str, str]], k: int = 50, match: str = "section",
              consensus: int = 1) -> dict[str, np.ndarray]:
  """Every outcome per held-out study (Q,), NaN where it does not apply: the means of these
  are `evaluate`'s figures (an AUC is not a mean: `knn/<rule>_probability` with
  `truth/<rule>` give it). queries (Q, S, D) section embeddings; truth_sections their reports."""
  truth = db.rules.table(truth_sections)
  nbrs, _ = report_composer.section_neighbours(queries, db, max(k, 1), match=match,
                                               section_names=section_names)
  composed = report_composer.compose(nbrs, db, section_names, consensus)
  out = _agreement(db, [c["sections"] for c in composed], truth)
  out.update({f"random_{key}": v for key, v in _random_agreement(db, truth).items()})
  measured = report_composer.measure(nbrs, db, section_names, k)
  for rule in db.rules.rules:
    t = truth[rule.name]
    ok = ~np.isnan(t)
    if not ok.any():
      continue
    cand = db.labels[rule.name]
    cand = cand[~np.isnan(cand)]
    if rule.mode == "regression":
      pred = np.asarray([m[rule.name]["value"] for m in measured], np.float64)
      out[f"knn/{rule.name}_mae"] = np.abs(pred - t)
      out[f"mean_baseline/{rule.name}_mae"] = np.abs(cand.mean() - t)
    elif rule.mode == "binary":
      out[f"knn/{rule.name}_probability"] = np.asarray(
          [m[rule.name]["probability"] for m in measured], np.float64)
      out[f"truth/{rule.name}"] = t
    else:
      grade = np.asarray([np.nan if m[rule.name]["grade"] is None else
                          labels_lib.SEVERITY.index(m[rule.name]["grade"]) for m in measured])
      out[f"knn/{rule.name}_grade_accuracy"] = np.where(ok, grade == t, np.nan)
      majority = np.bincount(cand.astype(int), minlength=4).argmax() if len(cand) else 0
      out[f"majority_baseline/{rule.name}_grade_accuracy"] = np.where(ok, t == majority, np.nan)
  return out


def summarise(outcomes: dict[str, np.ndarray]) -> dict[str, float]:
  """`per_query`'s outcomes -> the figures: means over the queries each applies to, and the
  kNN AUC of each binary rule."""
  out = {}
  for key, value in outcomes.items():
    if key.startswith("truth/"):
      continue
    if key.endswith("_probability"):
      rule = key[len("knn/"):-len("_probability")]
      t = outcomes[f"truth/{rule}"]
      both = ~np.isnan(t) & ~np.isnan(value)
      out[f"knn/{rule}_auc"] = auc(value[both], t[both])
    elif (~np.isnan(value)).any():
      out[key] = float(np.nanmean(value))
  return out


def evaluate(db: CandidateDatabase, queries: np.ndarray, section_names: tuple[str, ...],
             truth_sections: list[dict[str, str]], k: int = 50, match: str = "section",
             consensus: int = 1) -> dict[str, float]:
  """`per_query` summarised; plus the number of queries and candidates."""
  out = summarise(per_query(db, queries, section_names, truth_sections, k, match, consensus))
  out["queries"] = float(len(queries))
  out["candidates"] = float(len(db))
  return out


def evaluate_database(db_dir: str, mil_run: str, *, split: str = "", k: int = 50,
                      match: str = "section", consensus: int = 1
                      ) -> tuple[dict[str, float], dict[str, np.ndarray], np.ndarray]:
  """-> (metrics, per-study outcomes {figure: (Q,)}, the queries' study ids) of the run's
  `split` (default its evaluation split) querying the database in `db_dir`."""
  from echoprime_jax.retrieval.database import CandidateDatabase
  from echoprime_jax.retrieval.from_runs import run_file, split_reports
  from echoprime_jax.run.folder import RunFolder
  db = CandidateDatabase.load(db_dir)
  cfg = RunFolder(mil_run).read_config("mil").to_dict()
  split = split or cfg["data"]["eval_split"]
  z = np.load(run_file(RunFolder(mil_run).section_embeddings(split)))
  truth = split_reports(cfg["data"]["dir"], split, z["study_ids"])
  outcomes = per_query(db, z["section_embedding"],
                                    tuple(str(s) for s in z["sections"]), truth, k=k,
                                    match=match, consensus=consensus)
  metrics = {**summarise(outcomes), "queries": float(len(truth)),
             "candidates": float(len(db))}
  return metrics, outcomes, z["study_ids"]


def write_outcomes_csv(path: str, study_ids, outcomes: dict[str, np.ndarray]) -> None:
  """One row per held-out study: its pseudonym and one column per figure (nan where one does
  not apply); written to a temporary sibling, then renamed."""
  with open(path + ".tmp", "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(["study_id", *outcomes])
    for i, study in enumerate(study_ids):
      writer.writerow([str(study), *(f"{v[i]:.6g}" for v in outcomes.values())])
  os.replace(path + ".tmp", path)
