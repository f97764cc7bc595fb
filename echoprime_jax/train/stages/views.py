"""Stage: the view classifier (data, model, loss, classification metrics).

  python -m echoprime_jax.train --config configs/views.py:tiny --workdir DIR \
      --config.data.dir=SHARDS

ConvNeXt on clip frames -> view logits. As EchoPrime's released classifier, evaluation reads
frame 0 of each video (`data.frames=1`); with `data.frames=k` the logits of k frames are
averaged, and training reads its frames from a random start. The label space is a taxonomy
(`--config.taxonomy`: "coarse", the 11 views; "fine", the built-in 58; or a CSV path, see
`data_prep/views.py`); the shards' view labels resolve in it, and videos without a label in it
are read but carry no loss. Rare views weigh more in the loss
(`balance="inverse_frequency"`), so a view seen in 2% of videos is not ignored. Validation:
accuracy, balanced accuracy (mean per-class recall), per-class F1 and a confusion matrix
(WORKDIR/confusion/step_N.png and .json); a fine taxonomy also reports the coarse views
(`coarse/...` metrics, confusion coarse_step_N.*): a clip's coarse probability is the sum of
its fine children's.
"""

from __future__ import annotations

import functools
import json
import logging
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from data_prep import views as views_lib
from data_prep.views import COARSE_VIEWS
from echoprime_jax import parallel
from echoprime_jax.data import augment as augment_lib
from echoprime_jax.data import pipeline
from echoprime_jax.data.normalize import normalize_video
from echoprime_jax.data.shards import ShardIndex, video_table
from echoprime_jax.inference import stage_models
from echoprime_jax.inference.batches import predict_all
from echoprime_jax.inference.frozen_towers import load_converted
from echoprime_jax.inference.view_predictor import clip_logits, predict_step, roll_up
from echoprime_jax.run.folder import RunFolder
from echoprime_jax.train.stage import Stage, per_process

log = logging.getLogger("echoprime_jax.train")


def setup(cfg: Any, run: RunFolder, mesh) -> Stage:
  index = ShardIndex(cfg.data.dir)
  taxonomy = views_lib.taxonomy(cfg.taxonomy)
  table = video_table(index.studies(cfg.data.train_split), False, taxonomy)
  weights = class_weights(table[:, 2], len(taxonomy), cfg.balance)
  labelled = int((table[:, 2] >= 0).sum())
  if labelled == 0:
    raise ValueError(f"split {cfg.data.train_split!r} of {cfg.data.dir} has no videos with a "
                     f"view label in the {taxonomy.name!r} taxonomy (convert with --labels)")
  train_data = pipeline.clip_dataset(index, cfg.data.train_split, None,
                                     pipeline_config(cfg, cfg.batch_size, True), train=True,
                                     taxonomy=taxonomy)
  log.info("%d labelled training videos, %d %s views; class weights %s", labelled,
           len(taxonomy), taxonomy.name, np.round(weights, 2))
  mcfg = stage_models.model_config("views", cfg)
  coarse_ids = None if taxonomy.is_coarse else taxonomy.coarse_ids()
  init = None
  if cfg.init:
    init = lambda params: load_converted(params, cfg.init, "view classifier")  # noqa: E731
  return Stage(
      name="views", train_data=train_data, num_examples=labelled,
      create_model=lambda seed: stage_models.create_model("views", mcfg, seed),
      **step_parts(cfg, weights, coarse_ids),
      make_evaluator=lambda graphdef: Evaluator(cfg, index, graphdef, mesh, run, taxonomy),
      init_params=init)


def class_weights(labels: np.ndarray, num_classes: int, kind: str) -> np.ndarray:
  """(K,) loss weight per class: 1 / frequency, scaled so the mean weight over the labelled
  videos is 1 ("inverse_frequency"), or all ones ("none"). Unseen classes get weight 0."""
  if kind == "none":
    return np.ones((num_classes,), np.float32)
  if kind != "inverse_frequency":
    raise ValueError(f"balance must be 'inverse_frequency' or 'none', got {kind!r}")
  counts = np.bincount(labels[labels >= 0], minlength=num_classes).astype(np.float64)
  w = np.where(counts > 0, 1.0 / np.maximum(counts, 1), 0.0)
  w *= counts.sum() / max((w * counts).sum(), 1e-12)
  return w.astype(np.float32)


def coarse_log_probs(logits: jax.Array, coarse_ids: tuple[int, ...]) -> jax.Array:
  """(B, K_fine) logits -> (B, 11) log-probabilities of the coarse views (log of the summed
  probabilities of each coarse view's fine children)."""
  member = np.eye(len(COARSE_VIEWS), dtype=bool)[np.asarray(coarse_ids)]  # (K_fine, 11)
  lp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  return jax.nn.logsumexp(jnp.where(member[None], lp[:, :, None], -jnp.inf), axis=1)


def step_parts(cfg: Any, weights: np.ndarray, coarse_ids: tuple[int, ...] | None
               ) -> dict[str, Any]:
  """The stage's part of `step.train_step`: prepare (weights: the class weights), loss
  (coarse_ids: a fine taxonomy's coarse view of each class, else None)."""
  return {"prepare": functools.partial(prepare, cfg, weights),
          "loss": functools.partial(loss, cfg, coarse_ids)}


def prepare(cfg: Any, weights: np.ndarray, batch: dict) -> dict:
  """The global batch (video (B, T, H, W, 3) uint8, frame_mask (B, T), view (B,) int32
  (-1: no label), valid (B,), and the augmentation parameters when drawn) -> the normalised
  clip, its label (0 where none), its loss weight (0 where none) and which are labelled."""
  video = normalize_video(augment_lib.batch_video(batch), batch["frame_mask"],
                          jnp.dtype(cfg.dtype))
  labels = batch["view"]
  labelled = (labels >= 0) & batch["valid"]
  safe = jnp.where(labelled, labels, 0)
  w = jnp.where(labelled, jnp.asarray(weights)[safe], 0.0)
  return {"video": video, "frame_mask": batch["frame_mask"], "label": safe, "weight": w,
          "labelled": labelled}


def loss(cfg: Any, coarse_ids: tuple[int, ...] | None, model, inputs: dict
         ) -> tuple[jax.Array, dict]:
  """Weighted cross-entropy of the clip logits. coarse_ids (fine taxonomy): each class's
  coarse view; the loss then adds cfg.coarse_loss_weight x the cross-entropy of the rolled-up
  coarse prediction, so the coarse view is learned even where fine siblings are hard to tell
  apart."""
  safe, w, labelled = inputs["label"], inputs["weight"], inputs["labelled"]
  logits = clip_logits(model, inputs["video"], inputs["frame_mask"]).astype(jnp.float32)
  k = logits.shape[-1]
  targets = optax.smooth_labels(jax.nn.one_hot(safe, k), cfg.label_smoothing)
  ce = optax.softmax_cross_entropy(logits, targets)
  if coarse_ids is not None and cfg.coarse_loss_weight:
    coarse_label = jnp.asarray(coarse_ids)[safe]
    ce_coarse = -jnp.take_along_axis(coarse_log_probs(logits, coarse_ids),
                                     coarse_label[:, None], axis=1)[:, 0]
    ce = ce + cfg.coarse_loss_weight * ce_coarse
  hits = (jnp.argmax(logits, -1) == safe) & labelled
  return (ce * w).sum() / jnp.maximum(w.sum(), 1e-6), {
      "accuracy": hits.sum() / jnp.maximum(labelled.sum(), 1)}


def classification_metrics(labels: np.ndarray, predicted: np.ndarray,
                           names: tuple[str, ...]) -> tuple[dict[str, float], np.ndarray]:
  """labels, predicted: (N,) class ids (labels >= 0) -> (metrics, confusion (K, K) counts with
  rows = true class, columns = predicted). Balanced accuracy and macro F1 average over the
  classes present in `labels`."""
  k = len(names)
  confusion = np.zeros((k, k), np.int64)
  np.add.at(confusion, (labels, predicted), 1)
  support = confusion.sum(1)
  predicted_count = confusion.sum(0)
  tp = np.diag(confusion).astype(np.float64)
  recall = np.divide(tp, support, out=np.zeros(k), where=support > 0)
  precision = np.divide(tp, predicted_count, out=np.zeros(k), where=predicted_count > 0)
  f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros(k),
                 where=(precision + recall) > 0)
  present = support > 0
  out = {"accuracy": float(tp.sum() / max(len(labels), 1)),
         "balanced_accuracy": float(recall[present].mean()) if present.any() else 0.0,
         "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
         "num_videos": float(len(labels))}
  out.update({f"f1/{n}": float(f1[i]) for i, n in enumerate(names) if present[i]})
  return out, confusion


def confusion_png(confusion: np.ndarray, names: tuple[str, ...], path: str) -> None:
  """A row-normalised confusion matrix as a labelled heat map (`charts.confusion_chart`)."""
  from echoprime_jax.render import charts
  charts.confusion_chart(confusion, names, path)


class Evaluator:
  """Validation metrics over every labelled video of the evaluation split (frame 0 onwards,
  deterministic); writes the confusion matrix as PNG + JSON under WORKDIR/confusion/."""

  def __init__(self, cfg: Any, index: ShardIndex, eval_graphdef, mesh, run: RunFolder,
               taxonomy: views_lib.Taxonomy):
    self.dataset = pipeline.clip_dataset(
        index, cfg.data.eval_split, None, pipeline_config(cfg, cfg.eval_batch_size, False),
        train=False, taxonomy=taxonomy)
    self.sharding = parallel.batch_sharding(mesh)
    self.predict = jax.jit(functools.partial(predict_step, graphdef=eval_graphdef,
                                             dtype=cfg.dtype))
    self.run = run
    self.taxonomy = taxonomy

  def __call__(self, state: dict) -> dict[str, float]:
    out = predict_all(lambda batch: {"logits": self.predict(state["params"], state["rest"],
                                                            batch).astype(jnp.float32)},
                      self.dataset, self.sharding, carry=("view",))
    keep = out["view"] >= 0
    labels, logits = out["view"][keep], out["logits"][keep]
    tax = self.taxonomy
    results = {"": (labels, np.argmax(logits, -1), tax.views)}
    if not tax.is_coarse:
      coarse_ids = np.asarray(tax.coarse_ids())
      results["coarse_"] = (coarse_ids[labels], np.argmax(roll_up(logits, tax.coarse_ids()), -1),
                            COARSE_VIEWS)
    metrics: dict[str, float] = {}
    step = int(jax.device_get(state["step"]))
    for prefix, (y, pred, names) in results.items():
      m, confusion = classification_metrics(y, pred, names)
      metrics.update({(prefix.replace("_", "/") + k): v for k, v in m.items()})
      if jax.process_index() == 0:
        base = self.run.artefact("confusion", f"{prefix}step_{step}")
        os.makedirs(os.path.dirname(base), exist_ok=True)
        confusion_png(confusion, names, base + ".png")
        with open(base + ".json", "w") as f:
          json.dump({"views": list(names), "confusion": confusion.tolist()}, f)
    return metrics


def pipeline_config(cfg: Any, global_batch: int, train: bool) -> pipeline.PipelineConfig:
  """Clips of data.frames frames at stride 1 from cfg.image_size frames."""
  d = cfg.data
  return pipeline.PipelineConfig(
      batch_size=per_process(global_batch), clip_length=d.frames, clip_stride=1,
      frame_size=cfg.image_size,
      augment=augment_lib.AugmentConfig() if (train and d.augment) else None,
      seed=cfg.seed, num_epochs=None if train else 1, require_report=False,
      read_threads=d.read_threads, read_buffer=d.read_buffer,
      workers=d.workers if train else 0)
