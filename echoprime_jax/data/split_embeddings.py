"""Frozen-tower embeddings of one split, as arrays: what the MIL stage, retrieval and probing
read (`inference.embeddings` computes and caches them)."""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import numpy as np


@dataclasses.dataclass
class SplitEmbeddings:
  video_embedding: np.ndarray  # (N, D) float32, L2-normalised
  video_study: np.ndarray  # (N,) int32 position of the video's study in `study_ids`
  video_view: np.ndarray  # (N,) int32 COARSE_VIEWS index (-1 unknown)
  video_record: np.ndarray  # (N,) int64 global record index in the split's shards
  section_embedding: np.ndarray  # (M, S, D) float32, L2-normalised; zeros where absent
  section_text: np.ndarray  # (M, S) int32 distinct-text id per section, -1 where absent
  study_ids: np.ndarray  # (M,) str, the shards' pseudonymous study ids
  sections: tuple[str, ...]  # the S section names
  report_embedding: np.ndarray | None = None  # (M, D) whole report (first window), L2-normalised

  @property
  def num_studies(self) -> int:
    return len(self.study_ids)

  def videos_of(self) -> list[np.ndarray]:
    """Per study: the indices of its videos (in record order)."""
    order = np.argsort(self.video_study, kind="stable")
    bounds = np.searchsorted(self.video_study[order], np.arange(self.num_studies + 1))
    return [order[bounds[m]:bounds[m + 1]] for m in range(self.num_studies)]

  def save(self, path: str, fingerprint: dict[str, Any]) -> None:
    """Writes `path` (.npz) and its fingerprint (.json) atomically (rename when complete)."""
    tmp = path + ".tmp.npz"
    arrays = {k: getattr(self, k) for k in ("video_embedding", "video_study", "video_view",
                                            "video_record", "section_embedding",
                                            "section_text", "report_embedding")
              if getattr(self, k) is not None}
    np.savez(tmp, study_ids=np.asarray(self.study_ids, str),
             sections=np.asarray(self.sections, str), **arrays)
    os.replace(tmp, path)
    with open(meta_path(path) + ".tmp", "w") as f:
      json.dump(fingerprint, f, indent=2, sort_keys=True)
    os.replace(meta_path(path) + ".tmp", meta_path(path))

  @classmethod
  def load(cls, path: str) -> "SplitEmbeddings":
    with np.load(path, allow_pickle=False) as z:
      return cls(**{k: z[k] for k in ("video_embedding", "video_study", "video_view",
                                      "video_record", "section_embedding", "section_text",
                                      "study_ids")}, sections=tuple(str(s) for s in z["sections"]),
                 report_embedding=z["report_embedding"] if "report_embedding" in z else None)


def meta_path(path: str) -> str:
  return os.path.splitext(path)[0] + ".json"




def study_mean(emb: SplitEmbeddings) -> np.ndarray:
  """(M, D) each study's videos pooled uniformly: the L2-normalised mean of their embeddings
  (zeros for a study without videos). The plain pooling MIL is measured against."""
  mean = np.zeros((emb.num_studies, emb.video_embedding.shape[1]), np.float32)
  np.add.at(mean, emb.video_study, emb.video_embedding)
  return mean / np.maximum(np.linalg.norm(mean, axis=1, keepdims=True), 1e-12)
