"""The global batch a stage's step receives, as ShapeDtypeStructs: the input pipeline's own
element layout (`pipeline.VideoReportElement.padding`, plus the augmentation parameters the
pipeline draws when training), batched and sharded as `pipeline.to_global` would place it."""

from __future__ import annotations

import types
from typing import Any

import jax
import numpy as np

from echoprime_jax.data import augment, pipeline


def clip_batch(pcfg: pipeline.PipelineConfig, max_length: int | None, global_batch: int,
               train: bool, sharding) -> dict[str, jax.ShapeDtypeStruct]:
  """Video(-report) pairs: pcfg is the stage's pipeline config, max_length the report window
  (None: clips only, as the view classifier reads them)."""
  encoder = None if max_length is None else types.SimpleNamespace(max_len=max_length, pad_id=0)
  element: dict[str, Any] = pipeline.VideoReportElement(None, [], encoder, pcfg, train).padding()
  if train and pcfg.augment is not None:
    element.update(augment.identity_params())
  return {k: jax.ShapeDtypeStruct((global_batch, *np.shape(v)),
                                  jax.dtypes.canonicalize_dtype(np.asarray(v).dtype),
                                  sharding=sharding)
          for k, v in element.items()}
