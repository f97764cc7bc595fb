"""Reports and measurements from nearest neighbours, section by section.

Queries are a study's section embeddings `(Q, S, D)` (MIL or fixed-table pooling, one per
report section, in `section_names` order); each section searches the candidate database on its
own, either against the candidates' whole-report embeddings (`match="report"`, EchoPrime's
database) or against their embeddings of that same section (`match="section"`: what this
project's MIL stage is trained to match, `train/stages/mil.py`). Neighbour rows are -1 where a
section has fewer candidates than k. Report: for each section in canonical order, the text of
the nearest candidate whose report has that section (EchoPrime's rule). Measurements: each
label reads the neighbours of *its own section* (looked up by name; EchoPrime's released code
indexes an 11-entry list against a 15-row matrix, so most labels read another section's
neighbours):
  regression  mean of the k neighbours' values (NaN ignored);
  binary      fraction of positives, and `positive` = fraction >= the label's threshold
              (`thresholds`, default 0.5);
  severity    the distribution over none/mild/moderate/severe among the neighbours, its
              most likely grade and its expected grade.
"""

from __future__ import annotations

import math

import numpy as np

from data_prep import reports as reports_lib
from echoprime_jax.retrieval import labels as labels_lib
from echoprime_jax.retrieval.database import CandidateDatabase


def section_neighbours(queries: np.ndarray, db: CandidateDatabase, k: int,
                       chunk: int = 4096, match: str = "report",
                       section_names: tuple[str, ...] = ()) -> tuple[np.ndarray, np.ndarray]:
  """queries (Q, S, D) -> (candidate rows (Q, S, k), scores (Q, S, k)), one search per
  section (see the module docstring for `match`)."""
  if match == "section":
    return _by_section(queries, db, k, section_names)
  if match != "report":
    raise ValueError(f"match must be 'report' or 'section', got {match!r}")
  q, s, d = queries.shape
  flat = queries.reshape(q * s, d)
  idx, scores = [], []
  for start in range(0, len(flat), chunk):
    i, sc = db.index.search(flat[start:start + chunk], k)
    idx.append(i)
    scores.append(sc)
  kk = idx[0].shape[1]
  return np.concatenate(idx).reshape(q, s, kk), np.concatenate(scores).reshape(q, s, kk)


def _by_section(queries, db: CandidateDatabase, k: int, section_names):
  if db.section_indexes is None:
    raise ValueError("this database has no section embeddings; rebuild it, or use "
                     "match='report'")
  q, s, _ = queries.shape
  rows_out = np.full((q, s, k), -1, np.int64)
  scores_out = np.full((q, s, k), -np.inf, np.float32)
  for j, name in enumerate(section_names):
    if name not in db.section_names:
      continue
    rows, idx = db.section_indexes[db.section_names.index(name)]
    if len(rows) == 0:
      continue
    local, sc = idx.search(queries[:, j], min(k, len(rows)))
    rows_out[:, j, :local.shape[1]] = rows[local]
    scores_out[:, j, :local.shape[1]] = sc
  return rows_out, scores_out


def compose(neighbours: np.ndarray, db: CandidateDatabase, section_names: tuple[str, ...],
            consensus: int = 1) -> list[dict]:
  """neighbours (Q, S, k) -> per query {"sections": {name: text}, "sources": {name: candidate
  row}}, sections in canonical order. consensus 1 (EchoPrime's rule): each section's text is
  the first neighbour that has the section. consensus n > 1: of the n nearest neighbours that
  have it, the one whose section text embedding is closest on average to the others' (their
  medoid): still one real report's sentence, but the one most of the neighbourhood agrees
  with, less at the mercy of a single near miss."""
  if consensus < 1:
    raise ValueError(f"consensus must be >= 1, got {consensus}")
  has = {name: db.has_section(name) for name in section_names}
  use_embeddings = consensus > 1 and db.section_embeddings is not None
  out = []
  for row in neighbours:
    sections, sources = {}, {}
    for j, name in enumerate(section_names):
      pool = [int(c) for c in row[j] if c >= 0 and has[name][c]][:consensus]
      if not pool:
        continue
      choice = pool[0]
      if use_embeddings and len(pool) > 2 and name in db.section_names:
        e = db.section_embeddings[pool, db.section_names.index(name)]
        choice = pool[int(np.argmax((e @ e.T).sum(1)))]
      sections[name] = db.sections[choice][name]
      sources[name] = choice
    order = [n for n in reports_lib.SECTIONS if n in sections]
    out.append({"sections": {n: sections[n] for n in order},
                "sources": {n: sources[n] for n in order}})
  return out


def measure(neighbours: np.ndarray, db: CandidateDatabase, section_names: tuple[str, ...],
            k: int = 50, thresholds: dict[str, float] | None = None) -> list[dict[str, dict]]:
  """neighbours (Q, S, >=k) -> per query {label: {...}} (see the module docstring)."""
  thresholds = thresholds or {}
  out = [dict() for _ in range(len(neighbours))]
  for rule in db.rules.rules:
    if rule.section not in section_names:
      raise ValueError(f"label {rule.name!r} reads section {rule.section!r}, which the queries "
                       f"do not have (sections: {section_names})")
    j = section_names.index(rule.section)
    rows = neighbours[:, j, :k]
    values = np.where(rows >= 0, db.labels[rule.name][np.maximum(rows, 0)], np.nan)  # (Q, k)
    known = ~np.isnan(values)
    for qi in range(len(neighbours)):
      v = values[qi][known[qi]]
      entry: dict = {"section": rule.section, "neighbours": int(known[qi].sum())}
      if rule.mode == "regression":
        entry["value"] = float(v.mean()) if len(v) else math.nan
      elif rule.mode == "binary":
        p = float(v.mean()) if len(v) else math.nan
        entry.update(probability=p, threshold=float(thresholds.get(rule.name, 0.5)),
                     positive=bool(p >= thresholds.get(rule.name, 0.5)) if len(v) else None)
      else:
        counts = np.bincount(v.astype(int), minlength=4)[:4] if len(v) else np.zeros(4)
        dist = counts / max(counts.sum(), 1)
        entry.update(distribution=dict(zip(labels_lib.SEVERITY, map(float, dist))),
                     grade=labels_lib.SEVERITY[int(np.argmax(dist))] if len(v) else None,
                     expected_grade=float((dist * np.arange(4)).sum()) if len(v) else math.nan)
      out[qi][rule.name] = entry
  return out
