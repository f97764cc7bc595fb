"""The candidate database: historical studies' report embeddings, report sections and labels,
with a nearest-neighbour index over the embeddings.

Folder layout (`save` / `load`):
  candidates.parquet   study_id (pseudonym), sections (JSON {section: text}), one column per label
  embeddings.npy       (M, D) float32 L2-normalised report embeddings (the text tower's)
  index/               the search index over the report embeddings (`index.load_index`)
  section_embeddings.npy  (M, S, D) the text tower's embedding of each section (zeros: absent)
  section_index/<j>/   one index per section over the candidates that have it (rows in
                       section_rows.npz)
  rules.json           the label rules the labels were extracted with
  database.json        {"size", "dim", "labels", "sections", "section_sizes", "format"}: the
                       manifest `load` checks every file against
The folder is written whole or not at all (`run.output_folder`): a crashed rebuild leaves the
old database, never old indexes beside new candidates.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil

import numpy as np

from echoprime_jax.retrieval import search_index as index_lib
from echoprime_jax.retrieval import labels as labels_lib

FORMAT = 1


@dataclasses.dataclass
class CandidateDatabase:
  study_ids: np.ndarray  # (M,) str
  embeddings: np.ndarray  # (M, D) float32, L2-normalised
  sections: list[dict[str, str]]  # per candidate: {section: text}
  labels: dict[str, np.ndarray]  # name -> (M,) float32 (NaN: not stated)
  rules: labels_lib.Rules
  index: object = None  # ExactIndex | ScannIndex over `embeddings`
  section_names: tuple[str, ...] = ()  # S sections of `section_embeddings`
  section_embeddings: np.ndarray | None = None  # (M, S, D) float32, L2-normalised
  section_indexes: list | None = None  # per section: (rows (M_s,) int64, index over them)
  # has_section's answers, computed once per section (a pass over every candidate's report)
  _has: dict = dataclasses.field(default_factory=dict, repr=False, compare=False)

  def __len__(self) -> int:
    return len(self.study_ids)

  def has_section(self, name: str) -> np.ndarray:
    """(M,) bool: the candidate's report has text for section `name`."""
    if name not in self._has:
      self._has[name] = np.asarray([bool(s.get(name, "").strip()) for s in self.sections])
    return self._has[name]

  def save(self, dest: str, rules_path: str, overwrite: bool = False) -> None:
    """Writes the database folder `dest` (replacing one of ours only with `overwrite`)."""
    from echoprime_jax.run import output_folder
    with output_folder.atomic(dest, "database", overwrite) as directory:
      self._write(directory, rules_path)

  def _write(self, directory: str, rules_path: str) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq
    columns = {"study_id": [str(s) for s in self.study_ids],
               "sections": [json.dumps(s) for s in self.sections]}
    columns.update({f"label_{k}": v.astype(np.float32) for k, v in self.labels.items()})
    pq.write_table(pa.table(columns), os.path.join(directory, "candidates.parquet"))
    np.save(os.path.join(directory, "embeddings.npy"), self.embeddings.astype(np.float32))
    if self.index is not None:
      self.index.save(os.path.join(directory, "index"))
    if self.section_embeddings is not None:
      np.save(os.path.join(directory, "section_embeddings.npy"), self.section_embeddings)
      np.savez(os.path.join(directory, "section_rows.npz"),
               **{str(j): rows for j, (rows, _) in enumerate(self.section_indexes)})
      for j, (_, idx) in enumerate(self.section_indexes):
        idx.save(os.path.join(directory, "section_index", str(j)))
    shutil.copyfile(rules_path, os.path.join(directory, "rules.json"))
    with open(os.path.join(directory, "database.json"), "w") as f:
      json.dump({"size": len(self), "dim": int(self.embeddings.shape[1]),
                 "labels": list(self.labels), "sections": list(self.section_names),
                 "section_sizes": [len(rows) for rows, _ in (self.section_indexes or [])],
                 "format": FORMAT}, f, indent=2)

  @classmethod
  def load(cls, directory: str) -> "CandidateDatabase":
    import pyarrow.parquet as pq
    if not os.path.isfile(os.path.join(directory, "database.json")):
      raise FileNotFoundError(f"{directory}: not a candidate database (no database.json); "
                              "build one with `python -m echoprime_jax.index build`")
    table = pq.read_table(os.path.join(directory, "candidates.parquet")).to_pydict()
    labels = {k[len("label_"):]: np.asarray(v, np.float32) for k, v in table.items()
              if k.startswith("label_")}
    index = None
    if os.path.isdir(os.path.join(directory, "index")):
      index = index_lib.load_index(os.path.join(directory, "index"))
    with open(os.path.join(directory, "database.json")) as f:
      meta = json.load(f)
    names, sec_emb, sec_idx = tuple(meta.get("sections", ())), None, None
    if names:
      sec_emb = np.load(os.path.join(directory, "section_embeddings.npy"))
      with np.load(os.path.join(directory, "section_rows.npz")) as z:
        sec_idx = [(z[str(j)], index_lib.load_index(os.path.join(directory, "section_index",
                                                                 str(j))))
                   for j in range(len(names))]
    db = cls(np.asarray(table["study_id"], str),
             np.load(os.path.join(directory, "embeddings.npy")),
             [json.loads(s) for s in table["sections"]], labels,
             labels_lib.load_rules(os.path.join(directory, "rules.json")), index,
             names, sec_emb, sec_idx)
    _check(db, meta, directory)
    return db


def _check(db: "CandidateDatabase", meta: dict, directory: str) -> None:
  """ValueError naming what disagrees when the files do not match the manifest (a folder
  assembled from two builds, a truncated file)."""
  n, dim = int(meta.get("size", -1)), int(meta.get("dim", -1))
  found = {"candidates": len(db.study_ids), "embeddings": db.embeddings.shape[0]}
  if db.index is not None:
    found["index"] = len(db.index)
  if db.section_embeddings is not None:
    found["section_embeddings"] = db.section_embeddings.shape[0]
  wrong = {k: v for k, v in found.items() if v != n}
  if db.embeddings.ndim != 2 or db.embeddings.shape[1] != dim:
    wrong["embedding size"] = db.embeddings.shape[1:]
  sizes = meta.get("section_sizes")
  if db.section_indexes is not None and sizes is not None:
    for j, (rows, idx) in enumerate(db.section_indexes):
      # a section no candidate has gets a one-row placeholder index (`build`)
      if (len(rows) != sizes[j] or len(idx) != max(len(rows), 1)
          or (len(rows) and rows.max() >= n)):
        wrong[f"section {db.section_names[j]!r}"] = (len(rows), len(idx))
  if wrong:
    raise ValueError(f"{directory}: its files disagree with database.json ({n} candidates of "
                     f"{dim} dims; found {wrong}); rebuild it with "
                     "python -m echoprime_jax.index build")


def build(study_ids, embeddings: np.ndarray, sections: list[dict[str, str]],
          rules_path: str = labels_lib.DEFAULT_RULES, index_kind: str = "auto",
          section_names: tuple[str, ...] = (), section_embeddings: np.ndarray | None = None,
          **index_options) -> CandidateDatabase:
  """Candidates from studies with a report (others are dropped): labels by rules, an index over
  the report embeddings and, with section_embeddings (M, S, D), one per section."""
  keep = np.asarray([any(v.strip() for v in s.values()) for s in sections], bool)
  if not keep.any():
    raise ValueError("no study has a report: nothing to build a candidate database from")
  rules = labels_lib.load_rules(rules_path)
  kept_sections = [s for s, k in zip(sections, keep) if k]
  emb = np.asarray(embeddings, np.float32)[keep]
  emb = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
  db = CandidateDatabase(np.asarray(study_ids, str)[keep], emb, kept_sections,
                         rules.table(kept_sections), rules,
                         index_lib.build_index(emb, index_kind, **index_options))
  if section_embeddings is not None:
    sec = np.asarray(section_embeddings, np.float32)[keep]
    db.section_names, db.section_embeddings, db.section_indexes = tuple(section_names), sec, []
    for j, name in enumerate(section_names):
      rows = np.flatnonzero(db.has_section(name) & (np.abs(sec[:, j]).sum(1) > 0))
      vectors = sec[rows, j] if len(rows) else np.zeros((1, sec.shape[-1]), np.float32)
      db.section_indexes.append((rows.astype(np.int64),
                                 index_lib.build_index(vectors, index_kind, **index_options)))
  return db
