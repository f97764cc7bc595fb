"""EchoPrime's release -> this project's formats, once (`python -m echoprime_jax.release import`).

Towers: the three `.pt` state dicts (read with `torch.load(weights_only=True)`) become tower
folders. Candidates: the embeddings (p1 and p2 concatenated row-wise, used as released: EchoPrime
ranks by their dot product), the phrase-coded reports decoded to section texts (`phrases`), the
labels, and an index (exact, or ScaNN above 20,000 candidates) become a candidate database.
Candidates are named by their row ("candidate 17"), not by the release's study ids, which only
join the labels here. Phenotypes: mode (per_section.json), threshold (roc_thresholds.csv) and the
section each reads, by name and as the release's positional pairing reads it
(`phenotype_sections`). The three pickles are read only with `trust_pickles`, through the
restricted unpickler (`safe_pickle`); the output holds no pickle.
"""

from __future__ import annotations

import csv
import datetime
import json
import logging
import math
import os
import re
from typing import Any

import numpy as np

from echoprime_jax.release import layout, phrases, safe_pickle

log = logging.getLogger("echoprime_jax.release")

REGRESSION_NUMBER = r"(\d{1,3}(?:\.\d{1,2})?)"  # EchoPrime's regression rule: prefix, number


def phenotype_sections(section_phenotypes: dict[str, list[str]],
                       table_sections: tuple[str, ...]) -> tuple[dict[str, str], dict[str, str]]:
  """-> ({phenotype: section by name}, {phenotype: section the release reads}).

  The release predicts each phenotype from the neighbours of one row of its per-section
  similarity matrix, whose rows follow the MIL table's sections; it pairs the s-th key of
  section_to_phenotypes with row s (by position), so all but the first key read another
  section's neighbours. By name, a phenotype reads its own section's row. A phenotype listed
  under several sections is predicted once per listing and keeps the last, in both."""
  by_name, positional = {}, {}
  for position, (section, names) in enumerate(section_phenotypes.items()):
    if section not in table_sections:
      raise ValueError(f"section_to_phenotypes names the section {section!r}, which the MIL "
                       f"table has no row for (its sections: {list(table_sections)})")
    if position >= len(table_sections):
      raise ValueError(f"section_to_phenotypes has more sections ({len(section_phenotypes)}) "
                       f"than the MIL table has rows ({len(table_sections)})")
    for name in names:
      by_name[str(name)] = section
      positional[str(name)] = table_sections[position]
  return by_name, positional


def read_thresholds(path: str) -> dict[str, float]:
  """roc_thresholds.csv (`feature,threshold`) -> {phenotype: threshold}."""
  with open(path, newline="") as f:
    rows = list(csv.DictReader(f))
  if rows and not {"feature", "threshold"} <= set(rows[0]):
    raise ValueError(f"{path}: needs the columns feature,threshold")
  out = {}
  for n, row in enumerate(rows, start=2):
    try:
      out[str(row["feature"]).strip()] = float(row["threshold"])
    except (TypeError, ValueError):
      raise ValueError(f"{path}: line {n}: the threshold is not a number") from None
  return out


def _field(entry: dict, *names: str, default: Any = None) -> Any:
  for name in names:
    if name in entry:
      return entry[name]
  return default


def read_definitions(path: str) -> dict[str, dict[str, Any]]:
  """per_section.json -> {phenotype: {"mode": binary | regression, "phrases": [...]}}. An entry
  names its mode ("mode" / "type") and its label sources ("label_sources", or "phrases" /
  "sources"; a regression source marks its number "<#>"); its section is read from
  section_to_phenotypes (the file's own "section" names finding codes, FNDG_...)."""
  with open(path) as f:
    try:
      data = json.load(f)
    except json.JSONDecodeError as e:
      raise ValueError(f"{path}: not valid JSON ({e.msg}, line {e.lineno})") from None
  if not isinstance(data, dict):
    raise ValueError(f"{path}: expected an object {{phenotype: definition}}")
  out = {}
  for name, entry in data.items():
    if not isinstance(entry, dict):
      raise ValueError(f"{path}: the definition of {name!r} is not an object")
    mode = str(_field(entry, "mode", "type", default="")).lower()
    if mode not in ("binary", "regression"):
      raise ValueError(f"{path}: {name!r} has mode {mode!r}; expected binary or regression")
    sources = _field(entry, "phrases", "label_sources", "sources", default=[]) or []
    sources = [sources] if isinstance(sources, str) else [str(s) for s in sources]
    out[str(name)] = {"mode": mode, "phrases": sources}
  return out


def rules_json(phenotypes: list[dict[str, Any]]) -> dict[str, Any]:
  """The database's label rules (`retrieval/labels.py`): EchoPrime's definitions, each read
  from its section by name. The labels themselves come from the release, not from these."""
  rules = []
  for p in phenotypes:
    sources = p["phrases"] or [p["name"].replace("_", " ")]
    rule = {"name": p["name"], "section": p["section"], "mode": p["mode"]}
    if p["mode"] == "binary":
      rule["phrases"] = sources
    else:  # a source marks its number "<#>": the text before it is the prefix
      prefixes = "|".join(re.escape(s.split("<#>")[0].strip().lower()) for s in sources)
      rule["pattern"] = f"(?:{prefixes})\\D{{0,40}}?{REGRESSION_NUMBER}"
    rules.append(rule)
  return {"rules": rules}


def _label_value(value: Any) -> float:
  try:
    x = float(value)
  except (TypeError, ValueError):
    return math.nan
  return x if math.isfinite(x) else math.nan


def import_release(release_dir: str, out_dir: str, *, trust_pickles: bool,
                   index_kind: str = "auto", overwrite: bool = False,
                   progress: bool = True) -> dict[str, Any]:
  """Converts the release folder into `out_dir` (written whole: `run.output_folder`) -> the
  summary written to release.json."""
  from tqdm import tqdm

  from echoprime_jax.inference import attention_table
  from echoprime_jax.retrieval import labels as labels_lib
  from echoprime_jax.retrieval import search_index
  from echoprime_jax.retrieval.database import CandidateDatabase
  from echoprime_jax.run import output_folder
  from echoprime_jax.weights import state_dict_io

  files = layout.find_release_files(release_dir)
  if not trust_pickles:
    raise ValueError("the release keeps its candidate reports, labels and section map as "
                     "pickles, which can run code when read; pass --trust-pickles to read them "
                     "with the restricted unpickler (plain containers, numbers, strings, NumPy "
                     "and pandas basics only; anything else is refused)")
  output_folder.check_replaceable(out_dir, layout.OUTPUT_KIND, overwrite)
  sections = tuple(attention_table.TABLE_SECTIONS)
  table = attention_table.read_csv(files["mil"])
  book = phrases.PhraseBook.load(files["phrases"])
  thresholds = read_thresholds(files["thresholds"])
  definitions = read_definitions(files["per_section"])
  section_phenotypes = safe_pickle.load(files["section_phenotypes"])
  if not isinstance(section_phenotypes, dict):
    raise ValueError(f"{files['section_phenotypes']}: expected {{section: [phenotype, ...]}}")
  section_phenotypes = {str(k): [str(n) for n in v] for k, v in section_phenotypes.items()}
  by_name, positional = phenotype_sections(section_phenotypes, sections)
  undefined = sorted(set(by_name) - set(definitions))
  if undefined:
    raise ValueError(f"{files['per_section']}: no definition (mode) for {undefined}")

  embeddings = np.concatenate([state_dict_io.load_tensor(files["embeddings_p1"]),
                               state_dict_io.load_tensor(files["embeddings_p2"])]
                              ).astype(np.float32)
  with open(files["studies"], newline="") as f:
    studies = [str(r.get("Study", "")) for r in csv.DictReader(f)]
  reports = safe_pickle.load(files["reports"])
  raw_labels = safe_pickle.load(files["labels"])  # every pickle read before the long work
  if not isinstance(raw_labels, dict):
    raise ValueError(f"{files['labels']}: expected {{phenotype: {{study: value}}}}")
  reports = list(reports.tolist() if hasattr(reports, "tolist") else reports)
  counts = {"embeddings": len(embeddings), "candidate_studies.csv": len(studies),
            "candidate_reports": len(reports)}
  if embeddings.ndim != 2 or len(set(counts.values())) != 1:
    raise ValueError(f"{release_dir}: the candidate files disagree on the number of "
                     f"candidates ({counts}); the release is incomplete or mixed")
  decoded = []
  for row, coded in enumerate(tqdm(reports, desc="decode reports", unit="report",
                                   disable=not progress, mininterval=2)):
    try:
      decoded.append(book.decode(coded))
    except ValueError as e:
      raise ValueError(f"{files['reports']}: candidate {row}: {e}") from None
  phenotypes, labels = [], {}
  for name, section in by_name.items():
    values = raw_labels.get(name, {})
    labels[name] = np.asarray([_label_value(values.get(s, math.nan)) for s in studies],
                              np.float32)
    phenotypes.append({"name": name, "mode": definitions[name]["mode"], "section": section,
                       "section_compat": positional[name],
                       "threshold": thresholds.get(name, 0.5) if
                       definitions[name]["mode"] == "binary" else None,
                       "phrases": definitions[name]["phrases"],
                       "candidates_labelled": int(np.sum(~np.isnan(labels[name])))})

  with output_folder.atomic(out_dir, layout.OUTPUT_KIND, overwrite) as tmp:
    _write_towers(files, tmp)
    rules_path = os.path.join(tmp, "rules.json")
    with open(rules_path, "w") as f:
      json.dump(rules_json(phenotypes), f, indent=2)
    rules = labels_lib.load_rules(rules_path)
    log.info("indexing %d candidate embeddings", len(embeddings))
    db = CandidateDatabase(np.asarray([f"candidate {i}" for i in range(len(studies))]),
                           embeddings, decoded, labels, rules,
                           search_index.build_index(embeddings, index_kind))
    db.save(layout.database_dir(tmp), rules_path)
    os.remove(rules_path)  # the database keeps its copy
    attention_table.write_csv(table, layout.table_csv(tmp))
    with open(layout.phenotypes_json(tmp), "w") as f:
      json.dump({"phenotypes": [{k: v for k, v in p.items() if k != "phrases"}
                                for p in phenotypes],
                 "section_to_phenotypes": section_phenotypes}, f, indent=2)
    summary = {"format": layout.FORMAT, "candidates": len(db),
               "embedding_dim": int(embeddings.shape[1]), "index": db.index.kind,
               "phenotypes": len(phenotypes), "sections": list(sections),
               "files": {k: os.path.basename(v) for k, v in files.items()},
               "imported": datetime.date.today().isoformat()}
    with open(layout.release_json(tmp), "w") as f:
      json.dump(summary, f, indent=2)
  return summary


def _write_towers(files: dict[str, str], out: str) -> None:
  from echoprime_jax.weights import (bert_weights, convnext_weights, mvit_weights,
                                     state_dict_io, tower_folder)
  loaders = {"video": mvit_weights.load_mvit,
             "text": lambda sd, source: bert_weights.load_echoprime_text_encoder(
                 sd, None, source=source),
             "views": convnext_weights.load_convnext}
  for tower in layout.TOWERS:
    path = files[tower]
    model = loaders[tower](state_dict_io.load_state_dict(path), source=path)
    tower_folder.save_tower(layout.tower_dir(out, tower), model, source=path)
    log.info("%s tower converted from %s", tower, os.path.basename(path))
