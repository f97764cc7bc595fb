"""One pass of a jitted function over a finite dataset, on every device of every process.

Each process feeds its own slice of every batch (`pipeline.to_global`); the outputs and the
batch fields asked for are gathered across processes, the padding rows of the last batch
(valid == False) dropped. Every evaluation and prediction loop (pretraining recall, view
classification, MIL pooling, view prediction, split embedding) is this loop.
"""

from __future__ import annotations

from typing import Callable, Iterable

import numpy as np


def gather(local: dict) -> dict[str, np.ndarray]:
  """Per-process rows (numpy) and global arrays -> the same dict over every process."""
  import jax
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    local = multihost_utils.process_allgather(local, tiled=True)
  return {k: np.asarray(v) for k, v in local.items()}


def predict_all(predict: Callable[[dict], dict], dataset: Iterable[dict], sharding, *,
                inputs: tuple[str, ...] | None = None, carry: tuple[str, ...] = (),
                order_by: str | None = None, progress: Callable[[int], None] | None = None
                ) -> dict[str, np.ndarray]:
  """predict(global batch of the `inputs` fields, default all) -> {name: (B, ...)} over every
  batch; -> those outputs and the `carry` fields of the batches, padding dropped, optionally
  sorted (stably) by one of them. progress(n) is told the real rows of each batch."""
  parts: dict[str, list[np.ndarray]] = {}
  from echoprime_jax.data import pipeline
  for batch in dataset:
    fed = batch if inputs is None else {k: batch[k] for k in inputs}
    out = predict(pipeline.to_global(fed, sharding))
    got = gather({**out, **{k: batch[k] for k in carry}, "valid": batch["valid"]})
    for k, v in got.items():
      parts.setdefault(k, []).append(v)
    if progress is not None:
      progress(int(got["valid"].sum()))
  out = {k: np.concatenate(v) for k, v in parts.items()}
  keep = out.pop("valid").astype(bool)
  out = {k: v[keep] for k, v in out.items()}
  if order_by is not None:
    order = np.argsort(out[order_by], kind="stable")
    out = {k: v[order] for k, v in out.items()}
  return out
