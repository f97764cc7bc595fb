"""The candidate database: historical studies' report embeddings, report sections and labels,
with a nearest-neighbour index over the embeddings.

Folder layout (`save` / `load`):
  candidates.parquet   study_id (pseudonym), sections (JSON {section: text}), one column per label
  embeddings.npy       (M, D) float32 L2-normalised report embeddings (the text tower's)
  index/               the search index (`index.load_index`)
  rules.json           the label rules the labels were extracted with
  database.json        {"size", "dim", "labels", "format"}
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil

import numpy as np

from echoprime_jax.retrieval import index as index_lib
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

  def __len__(self) -> int:
    return len(self.study_ids)

  def has_section(self, name: str) -> np.ndarray:
    """(M,) bool: the candidate's report has text for section `name`."""
    return np.asarray([bool(s.get(name, "").strip()) for s in self.sections])

  def save(self, directory: str, rules_path: str) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq
    os.makedirs(directory, exist_ok=True)
    columns = {"study_id": [str(s) for s in self.study_ids],
               "sections": [json.dumps(s) for s in self.sections]}
    columns.update({f"label_{k}": v.astype(np.float32) for k, v in self.labels.items()})
    pq.write_table(pa.table(columns), os.path.join(directory, "candidates.parquet"))
    np.save(os.path.join(directory, "embeddings.npy"), self.embeddings.astype(np.float32))
    if self.index is not None:
      self.index.save(os.path.join(directory, "index"))
    shutil.copyfile(rules_path, os.path.join(directory, "rules.json"))
    with open(os.path.join(directory, "database.json"), "w") as f:
      json.dump({"size": len(self), "dim": int(self.embeddings.shape[1]),
                 "labels": list(self.labels), "format": FORMAT}, f, indent=2)

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
    return cls(np.asarray(table["study_id"], str),
               np.load(os.path.join(directory, "embeddings.npy")),
               [json.loads(s) for s in table["sections"]], labels,
               labels_lib.load_rules(os.path.join(directory, "rules.json")), index)


def build(study_ids, embeddings: np.ndarray, sections: list[dict[str, str]],
          rules_path: str = labels_lib.DEFAULT_RULES, index_kind: str = "auto",
          **index_options) -> CandidateDatabase:
  """Candidates from studies with a report (others are dropped): labels by rules, an index."""
  keep = np.asarray([any(v.strip() for v in s.values()) for s in sections], bool)
  if not keep.any():
    raise ValueError("no study has a report: nothing to build a candidate database from")
  rules = labels_lib.load_rules(rules_path)
  kept_sections = [s for s, k in zip(sections, keep) if k]
  emb = np.asarray(embeddings, np.float32)[keep]
  emb = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
  return CandidateDatabase(np.asarray(study_ids, str)[keep], emb, kept_sections,
                           rules.table(kept_sections), rules,
                           index_lib.build_index(emb, index_kind, **index_options))
