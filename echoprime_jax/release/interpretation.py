"""EchoPrime's released inference, on an imported release (`release import` output): one study
-> its report and phenotypes, as the release computes them.

  videos   data prep's reader with the released crop (sector mask, centre square, 10% cut per
           side, bicubic to 224 px; RGB for DICOM and video alike, where the release feeds its
           DICOM path BGR); each clip frames 0, 2, ..., 30, normalised with EchoPrime's pixel
           statistics, zero frames past the end -> the video tower -> (512,)
  views    the view classifier on each clip's first (normalised) frame -> argmax of 11 views
  sections per report section s of the MIL table: sum over videos of table[s, view] x embedding,
           L2-normalised -> (15, 512)
  report   per section, the candidate of highest dot product with the section's embedding
           among those whose report has the section; its "Section: text [SEP]" (`phrases`). The
           release looks for the section's name anywhere in a report's text (an unescaped,
           case-sensitive pattern); here a report has a section when its codes do
  metrics  per section, the k = 50 candidates of highest dot product; a phenotype is the mean of
           those neighbours' labels that exist (for binary phenotypes a fraction, EchoPrime's
           number; "positive" at roc_thresholds.csv's threshold is ours: the released code
           reads no threshold), from its own section's neighbours, or with `compat` from the
           row the release's positional pairing reads
Nothing here unpickles or imports training code; the imported folder is opened read-only.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from typing import Any

import numpy as np

from echoprime_jax.release import layout, phrases

log = logging.getLogger("echoprime_jax.release")

CLIP_FRAMES, CLIP_STRIDE, FRAME_SIZE = 16, 2, 224  # the release's inference clip
K = 50  # neighbours per phenotype in the release


@dataclasses.dataclass
class ImportedRelease:
  root: str
  db: Any  # retrieval.database.CandidateDatabase
  table: np.ndarray  # (15, 11) the MIL table
  phenotypes: list[dict[str, Any]]  # name, mode, section, section_compat, threshold

  @classmethod
  def load(cls, root: str) -> "ImportedRelease":
    from echoprime_jax.inference import attention_table
    from echoprime_jax.retrieval.database import CandidateDatabase
    from echoprime_jax.run import output_folder
    if output_folder.kind_of(root) != layout.OUTPUT_KIND or not os.path.isfile(
        layout.release_json(root)):
      raise ValueError(f"{root}: not an imported EchoPrime release; make one with "
                       "python -m echoprime_jax.release import --release RELEASE --out DIR")
    with open(layout.phenotypes_json(root)) as f:
      phenotypes = json.load(f)["phenotypes"]
    return cls(root, CandidateDatabase.load(layout.database_dir(root)),
               attention_table.read_csv(layout.table_csv(root)), phenotypes)

  @property
  def thresholds(self) -> dict[str, float]:
    return {p["name"]: float(p["threshold"]) for p in self.phenotypes
            if p["threshold"] is not None}

  def database(self, compat: bool = False):
    """The candidate database whose label rules read each phenotype's section by name, or
    (compat) the section the release's positional pairing reads."""
    from echoprime_jax.retrieval import labels as labels_lib
    section = {p["name"]: p["section_compat" if compat else "section"] for p in self.phenotypes}
    rules = labels_lib.Rules(tuple(dataclasses.replace(r, section=section[r.name])
                                   for r in self.db.rules.rules), self.db.rules.grades)
    return dataclasses.replace(self.db, rules=rules)


def clip_embeddings(graphdef, state, video, frame_mask):
  """The video tower on each normalised clip, zero frames past its end -> (B, 512), not
  L2-normalised (the section sums weight the tower's outputs as they are)."""
  import jax.numpy as jnp
  from flax import nnx

  from echoprime_jax.data.normalize import normalize_video
  return nnx.merge(graphdef, state)(normalize_video(video, frame_mask, jnp.float32))


def first_frame_views(graphdef, state, video, frame_mask):
  """The view classifier on each clip's first normalised frame -> (B, 11) logits."""
  import jax.numpy as jnp
  from flax import nnx

  from echoprime_jax.data.normalize import normalize_video
  x = normalize_video(video[:, :1], frame_mask[:, :1], jnp.float32)[:, 0]
  return nnx.merge(graphdef, state)(x)


def study_features(release_root: str, clips: np.ndarray, masks: np.ndarray, mesh
                   ) -> tuple[np.ndarray, np.ndarray]:
  """clips (N, 16, 224, 224, 3) uint8, masks (N, 16) -> (embeddings (N, 512) float32, view
  logits (N, 11) float32), with the imported towers."""
  import functools

  import jax
  from flax import nnx

  from echoprime_jax import parallel
  from echoprime_jax.inference import embeddings as embeddings_lib
  from echoprime_jax.weights import tower_folder
  out = []
  for tower, fn in (("video", clip_embeddings), ("views", first_frame_views)):
    graphdef, state = nnx.split(tower_folder.load_tower(layout.tower_dir(release_root, tower)))
    state = jax.device_put(state, parallel.replicated(mesh))
    out.append(embeddings_lib.embed_in_batches(
        jax.jit(functools.partial(fn, graphdef)), state, {"video": clips, "frame_mask": masks},
        batch_size=jax.device_count(), mesh=mesh))
  return out[0], out[1]


def section_embeddings(embeddings: np.ndarray, views: np.ndarray, table: np.ndarray
                       ) -> np.ndarray:
  """(N, D) video embeddings, (N,) view ids, (S, K) table -> (S, D) L2-normalised section
  embeddings (`attention_table.pool`)."""
  import jax.numpy as jnp

  from echoprime_jax.inference import attention_table
  pooled = attention_table.pool(jnp.asarray(embeddings)[None], jnp.asarray(views)[None],
                                jnp.ones((1, len(views)), bool), jnp.asarray(table))
  return np.asarray(pooled[0], np.float32)


def nearest_having(db, query: np.ndarray, section: str, first: np.ndarray) -> int:
  """The candidate of highest dot product with `query` whose report has `section`: the first
  such in the index's ranking `first`, else an exact search over all that have it; -1: none."""
  has = db.has_section(section)
  for c in first:
    if c >= 0 and has[c]:
      return int(c)
  rows = np.flatnonzero(has)
  if not len(rows):
    return -1
  return int(rows[np.argmax(db.embeddings[rows] @ query)])


def interpret(pooled: np.ndarray, release: ImportedRelease, *, k: int = K,
              compat: bool = False, thresholds: dict[str, float] | None = None
              ) -> dict[str, Any]:
  """Section embeddings (S, D) -> {"report": {section: text}, "report_text", "report_sources",
  "measurements"}; `thresholds` replace the release's for the phenotypes they name."""
  from echoprime_jax.inference.attention_table import TABLE_SECTIONS
  from echoprime_jax.inference.interpretation import measurements
  from echoprime_jax.retrieval import report_composer
  db = release.database(compat)
  sections = tuple(TABLE_SECTIONS)
  rows, scores = report_composer.section_neighbours(pooled[None], db, k, match="report",
                                                    section_names=sections)
  report, sources = {}, {}
  for j, name in enumerate(sections):
    c = nearest_having(db, pooled[j], name, rows[0, j])
    if c >= 0:
      report[name] = db.sections[c][name]
      sources[name] = {"study_id": str(db.study_ids[c]),
                       "score": float(db.embeddings[c] @ pooled[j])}
  thresholds = {**release.thresholds, **(thresholds or {})}
  return {"report": report, "report_sources": sources,
          "measurements": measurements(rows, scores, sections, db, k, thresholds),
          "report_text": phrases.report_text(report)}


def interpret_study(folder: str, release_root: str, *, k: int = K, compat: bool = False,
                    thresholds: dict[str, float] | None = None, mesh=None,
                    progress: bool = True) -> tuple[dict, list[np.ndarray]]:
  """One study folder (DICOM / video files) -> (result dict, thumbnail strips per video), in
  the shape `inference.interpretation.write_outputs` writes."""
  import jax

  from data_prep.views import COARSE_VIEWS
  from echoprime_jax import parallel
  from echoprime_jax.inference import study_reader
  from echoprime_jax.inference.attention_table import TABLE_SECTIONS
  from echoprime_jax.render import study_page
  mesh = mesh if mesh is not None else parallel.make_mesh({"data": -1})
  release = ImportedRelease.load(release_root)  # the cheap checks first
  study = study_reader.read_study(folder, FRAME_SIZE, progress=progress, preset="echoprime")
  clips = [v.clip(CLIP_FRAMES, CLIP_STRIDE) for v in study.videos]
  embeddings, logits = study_features(release_root, np.stack([c for c, _ in clips]),
                                      np.stack([m for _, m in clips]), mesh)
  views = logits.argmax(1)
  pooled = section_embeddings(embeddings, views, release.table)
  weights = release.table[:, views]  # (S, N): each video's weight in each section's sum
  shares = weights / np.maximum(weights.sum(1, keepdims=True), 1e-12)
  z = logits - logits.max(1, keepdims=True)
  probs = np.exp(z) / np.exp(z).sum(1, keepdims=True)
  result = {
      "videos": [{"number": v.number, "num_frames": v.num_frames, "fps": v.fps,
                  "colour": v.channels == 3, "view": COARSE_VIEWS[views[i]],
                  "view_probability": float(probs[i].max())}
                 for i, v in enumerate(study.videos)],
      "not_used": [{"number": nb, "status": st, "reason": r} for nb, st, r in study.not_used],
      "sections": list(TABLE_SECTIONS), "attention": shares.round(5).tolist(),
      "k": k, "match": "report", "database_size": len(release.db), "consensus": 1,
      **interpret(pooled, release, k=k, compat=compat, thresholds=thresholds),
      "pairing": "positional (as released)" if compat else "by section name",
      "models": {"release": os.path.basename(os.path.normpath(os.path.abspath(release_root)))},
      "devices": jax.device_count()}
  strips = [study_page.thumbnail_strip(v.thumbnails()) for v in study.videos]
  return result, strips
