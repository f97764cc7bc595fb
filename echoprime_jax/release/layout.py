"""Where things are: EchoPrime's release folder (as published) and the folder `release import`
writes (this project's formats; nothing in it is a pickle).

Release (`--release DIR`):
  weights/echo_prime_encoder.pt, echo_prime_text_encoder.pt, view_classifier.pt
  candidates_data/candidate_embeddings_p1.pt, candidate_embeddings_p2.pt   (rows concatenated)
  candidates_data/candidate_studies.csv   (`Study` column, the embeddings' row order)
  candidates_data/candidate_reports.pkl   (per candidate: [(section, phrase, value), ...])
  candidates_data/candidate_labels.pkl    ({phenotype: {study: value}})
  assets/MIL_weights.csv, all_phr.json, per_section.json, roc_thresholds.csv,
  assets/section_to_phenotypes.pkl
A file is looked for at that path, then by its name anywhere in the folder (releases get
unpacked flat, or with `model_data/` above).

Imported (`--out DIR`):
  towers/video, towers/text, towers/views   tower folders (`convert_weights`' format)
  database/                                 a candidate database (`retrieval/database.py`):
                                            decoded report sections, labels, embeddings, index
  mil_weights.csv                           the anatomical-attention table (15 x 11)
  phenotypes.json                           each phenotype: mode, section by name, the section
                                            the release's positional pairing reads, threshold
  release.json                              what was imported: counts, files, format
"""

from __future__ import annotations

import os

RELEASE_FILES = {
    "video": "weights/echo_prime_encoder.pt",
    "text": "weights/echo_prime_text_encoder.pt",
    "views": "weights/view_classifier.pt",
    "embeddings_p1": "candidates_data/candidate_embeddings_p1.pt",
    "embeddings_p2": "candidates_data/candidate_embeddings_p2.pt",
    "studies": "candidates_data/candidate_studies.csv",
    "reports": "candidates_data/candidate_reports.pkl",
    "labels": "candidates_data/candidate_labels.pkl",
    "mil": "assets/MIL_weights.csv",
    "phrases": "assets/all_phr.json",
    "per_section": "assets/per_section.json",
    "thresholds": "assets/roc_thresholds.csv",
    "section_phenotypes": "assets/section_to_phenotypes.pkl",
}
PICKLES = ("reports", "labels", "section_phenotypes")

OUTPUT_KIND = "echoprime-release"
FORMAT = 1
TOWERS = ("video", "text", "views")


def find_release_files(release_dir: str) -> dict[str, str]:
  """{role: path} of every release file; ValueError listing every one that is missing."""
  if not os.path.isdir(release_dir):
    raise ValueError(f"{release_dir}: not a folder (give the EchoPrime release folder, the one "
                     "holding weights/, candidates_data/ and assets/)")
  by_name: dict[str, str] = {}
  for root, _, names in os.walk(release_dir):
    for name in names:
      by_name.setdefault(name, os.path.join(root, name))
  found, missing = {}, []
  for role, rel in RELEASE_FILES.items():
    path = os.path.join(release_dir, rel)
    path = path if os.path.isfile(path) else by_name.get(os.path.basename(rel))
    if path is None:
      missing.append(rel)
    else:
      found[role] = path
  if missing:
    raise ValueError(f"{release_dir}: the EchoPrime release lacks {', '.join(missing)}")
  return found


def tower_dir(imported: str, tower: str) -> str:
  return os.path.join(imported, "towers", tower)


def database_dir(imported: str) -> str:
  return os.path.join(imported, "database")


def table_csv(imported: str) -> str:
  return os.path.join(imported, "mil_weights.csv")


def phenotypes_json(imported: str) -> str:
  return os.path.join(imported, "phenotypes.json")


def release_json(imported: str) -> str:
  return os.path.join(imported, "release.json")
