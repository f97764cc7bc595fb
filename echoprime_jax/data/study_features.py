"""Grain pipeline over cached embeddings (`split_embeddings.SplitEmbeddings`): whole studies as bags
of per-video features, for the MIL stage.

Each batch (B studies, V = max_videos slots, S sections, D embedding dims, K views):

  features     (B, V, D + K) float32  L2-normalised video embedding ++ view one-hot (zeros
                                      for an unknown view): EchoPrime's 512 + 11 layout
  video_mask   (B, V) bool            views (B, V) int32 (-1: unknown or empty slot)
  video_index  (B, V) int32           row of the video in the cache (-1: empty slot)
  targets      (B, S, D) float32      the frozen text tower's section embeddings
  target_text  (B, S) int32           distinct-text id per section, -1 absent
  study        (B,) int32             valid (B,) bool (False: padding of a finite pass)

A study with more than V videos contributes a random subset when training and its first V
(record order) otherwise. Studies without any report section are left out of training.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from echoprime_jax.data import pipeline
from echoprime_jax.data.split_embeddings import SplitEmbeddings


@dataclasses.dataclass(frozen=True)
class FeatureConfig:
  batch_size: int  # studies per process
  max_videos: int = 32
  num_views: int = 11
  seed: int = 0
  num_epochs: int | None = None  # None: forever (training); 1: one pass


class StudyFeatures:
  """Study position -> one element (see the module docstring)."""

  def __init__(self, emb: SplitEmbeddings, cfg: FeatureConfig, train: bool):
    self.emb, self.cfg, self.train = emb, cfg, train
    self.videos = emb.videos_of()

  def __call__(self, position, rng: np.random.Generator | None = None) -> dict:
    c, e, position = self.cfg, self.emb, int(position)
    d, s = e.video_embedding.shape[1], len(e.sections)
    out = {"features": np.zeros((c.max_videos, d + c.num_views), np.float32),
           "video_mask": np.zeros((c.max_videos,), bool),
           "views": np.full((c.max_videos,), -1, np.int32),
           "video_index": np.full((c.max_videos,), -1, np.int32),
           "targets": np.zeros((s, d), np.float32),
           "target_text": np.full((s,), -1, np.int32),
           "study": np.int32(position), "valid": np.bool_(position >= 0)}
    if position < 0:  # padding of a finite pass
      return out
    rows = self.videos[position]
    if len(rows) > c.max_videos:
      rows = (np.sort(rng.choice(rows, c.max_videos, replace=False)) if self.train
              else rows[:c.max_videos])
    n = len(rows)
    views = e.video_view[rows]
    out["features"][:n, :d] = e.video_embedding[rows]
    known = (views >= 0) & (views < c.num_views)
    out["features"][np.arange(n)[known], d + views[known]] = 1.0
    out["video_mask"][:n] = True
    out["views"][:n] = views
    out["video_index"][:n] = rows
    out["targets"] = e.section_embedding[position].astype(np.float32)
    out["target_text"] = e.section_text[position]
    return out


def dataset(emb: SplitEmbeddings, cfg: FeatureConfig, *, train: bool,
            process_index: int | None = None, process_count: int | None = None):
  """Batches of studies (per process); training shuffles and repeats, a finite pass is padded
  to whole global batches."""
  import grain
  process_index, process_count = pipeline.process_slot(process_index, process_count)
  positions = np.arange(emb.num_studies, dtype=np.int64)
  if train:
    positions = positions[(emb.section_text >= 0).any(1)]
  if len(positions) == 0:
    raise ValueError("no studies with report sections to train the MIL stage on")
  pcfg = pipeline.PipelineConfig(batch_size=cfg.batch_size, seed=cfg.seed,
                                 num_epochs=cfg.num_epochs, read_threads=1, read_buffer=4,
                                 workers=0)
  if cfg.num_epochs is not None and not train:
    positions = pipeline.pad_to_global_batches(positions, pcfg, process_count, -1)
  return pipeline.finish(grain.MapDataset.source(positions), StudyFeatures(emb, cfg, train),
                         pcfg, train, process_index, process_count)
