"""A trained view classifier (a `configs/views.py` run folder) as a predictor of coarse views.

Used where videos have no view label: the export (predicted view per video), `interpret` (the
views of a new study, which feed the MIL aggregator's 512 + 11 features), the demo. A fine
(58-view) classifier's prediction is rolled up to the 11 coarse views (its children's
probabilities summed), the label space the MIL stage and EchoPrime's attention table use.

Clips: the classifier's own evaluation clip (frame 0 onwards, `data.frames` frames at stride 1,
its `image_size`), exactly as its validation read them (`clip_logits` is the training stage's
evaluation too).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from data_prep import views as views_lib
from data_prep.views import COARSE_VIEWS
from echoprime_jax.data.normalize import normalize_video

log = logging.getLogger("echoprime_jax.inference")


def clip_logits(model, video: jax.Array, frame_mask: jax.Array) -> jax.Array:
  """video: (B, T, H, W, 3) normalised; frame_mask (B, T) -> (B, K) mean logits of the
  clip's real frames."""
  b, t = video.shape[:2]
  logits = model(video.reshape(b * t, *video.shape[2:])).reshape(b, t, -1)
  weight = frame_mask.astype(logits.dtype)[..., None]
  return (logits * weight).sum(1) / jnp.maximum(weight.sum(1), 1.0)


def predict_step(params, rest, batch: dict, *, graphdef, dtype: str) -> jax.Array:
  """(B, K) logits of each clip; batch: video (B, T, H, W, 3) uint8, frame_mask (B, T)."""
  model = nnx.merge(graphdef, params, rest)
  video = normalize_video(batch["video"], batch["frame_mask"], jnp.dtype(dtype))
  return clip_logits(model, video, batch["frame_mask"])


def roll_up(logits: np.ndarray, coarse_ids: tuple[int, ...]) -> np.ndarray:
  """(N, K_fine) logits -> (N, 11) coarse probabilities: each coarse view's fine children's
  softmax probabilities summed."""
  z = logits - logits.max(1, keepdims=True)
  p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
  out = np.zeros((len(logits), len(COARSE_VIEWS)))
  np.add.at(out.T, np.asarray(coarse_ids), p.T)
  return out


@dataclasses.dataclass
class ViewPredictor:
  step: Any  # jitted (params, rest, batch) -> (B, K) logits
  params: Any
  rest: Any
  taxonomy: views_lib.Taxonomy
  frames: int  # frames per clip (their logits averaged)
  image_size: int
  source: dict[str, Any]  # run folder and step

  @classmethod
  def from_run(cls, run_dir: str, mesh) -> "ViewPredictor":
    """The best kept checkpoint (by the run's best_metric) of a view-classifier run folder,
    replicated on `mesh`; the folder is opened read-only."""
    from echoprime_jax.inference.load import load_run
    run = load_run(run_dir, mesh, stage="views")
    cfg = run.config
    taxonomy = views_lib.taxonomy(cfg.taxonomy)
    graphdef, params, rest = nnx.split(run.model, nnx.Param, ...)
    # parameters as arguments, not constants of the compiled program
    step = jax.jit(functools.partial(predict_step, graphdef=graphdef, dtype=cfg.dtype))
    log.info("view classifier from %s, step %d (%d %s views)", run_dir, run.step,
             len(taxonomy), taxonomy.name)
    return cls(step, params, rest, taxonomy, int(cfg.data.frames), int(cfg.image_size),
               run.source)

  def predict(self, batch: dict) -> dict:
    """{"logits": (B, K)} of a (global) batch of clips."""
    return {"logits": self.step(self.params, self.rest, batch)}

  def coarse_probabilities(self, video: np.ndarray, frame_mask: np.ndarray,
                           sharding=None) -> np.ndarray:
    """video (B, T, H, W, 3) uint8 (T >= self.frames; the first `frames` are read),
    frame_mask (B, T) -> (B, 11) coarse-view probabilities."""
    batch = {"video": video[:, :self.frames], "frame_mask": frame_mask[:, :self.frames]}
    if sharding is not None:
      from echoprime_jax.data import pipeline
      batch = pipeline.to_global(batch, sharding)
    logits = np.asarray(jax.device_get(self.predict(batch)["logits"]), np.float64)
    return roll_up(logits, self.taxonomy.coarse_ids())

  def predict_split(self, index, split: str, batch_size: int, mesh
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Every video of `split`, in record order -> (records (N,) int64, coarse probabilities
    (N, 11)). batch_size: global, over every device and process."""
    from tqdm import tqdm

    from echoprime_jax import parallel
    from echoprime_jax.data import pipeline
    from echoprime_jax.inference.batches import predict_all
    pcfg = pipeline.PipelineConfig(batch_size=batch_size // jax.process_count(),
                                   clip_length=self.frames, clip_stride=1,
                                   frame_size=self.image_size, augment=None, num_epochs=1,
                                   require_report=False, workers=0)
    total = sum(len(s.records) for s in index.studies(split))
    with tqdm(total=total, desc=f"views {split}", unit="video",
              disable=jax.process_index() != 0) as bar:
      out = predict_all(self.predict,
                        pipeline.clip_dataset(index, split, None, pcfg, train=False,
                                              taxonomy=self.taxonomy),
                        parallel.batch_sharding(mesh), inputs=("video", "frame_mask"),
                        carry=("record",), order_by="record", progress=bar.update)
    probs = roll_up(out["logits"].astype(np.float64), self.taxonomy.coarse_ids())
    return out["record"].astype(np.int64), probs
