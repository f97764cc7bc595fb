"""The global batch a stage's step receives, as ShapeDtypeStructs: the input pipelines' own
element layouts (`pipeline.VideoReportElement.padding` plus the augmentation parameters the
pipeline draws when training; `study_features.StudyFeatures`' empty study), batched and
sharded as `pipeline.to_global` would place them."""

from __future__ import annotations

import types
from typing import Any

import jax
import numpy as np

from echoprime_jax.data import augment, pipeline, study_features


def clip_batch(pcfg: pipeline.PipelineConfig, max_length: int | None, global_batch: int,
               train: bool, sharding) -> dict[str, jax.ShapeDtypeStruct]:
  """Video(-report) pairs: pcfg is the stage's pipeline config, max_length the report window
  (None: clips only, as the view classifier reads them)."""
  encoder = None if max_length is None else types.SimpleNamespace(max_len=max_length, pad_id=0)
  element: dict[str, Any] = pipeline.VideoReportElement(None, [], encoder, pcfg, train).padding()
  if train and pcfg.augment is not None:
    element.update(augment.identity_params())
  return _batched(element, global_batch, sharding)


def study_batch(embed_dim: int, max_videos: int, num_views: int, num_sections: int,
                global_batch: int, sharding) -> dict[str, jax.ShapeDtypeStruct]:
  """The MIL stage's studies of cached video embeddings (`study_features`)."""
  cached = types.SimpleNamespace(video_embedding=np.zeros((0, embed_dim), np.float32),
                                 sections=[""] * num_sections, videos_of=lambda: [])
  cfg = study_features.FeatureConfig(global_batch, max_videos, num_views)
  element = study_features.StudyFeatures(cached, cfg, train=True)(-1)  # an empty slot
  return _batched(element, global_batch, sharding)


def _batched(element: dict[str, Any], global_batch: int, sharding):
  return {k: jax.ShapeDtypeStruct((global_batch, *np.shape(v)),
                                  jax.dtypes.canonicalize_dtype(np.asarray(v).dtype),
                                  sharding=sharding)
          for k, v in element.items()}
