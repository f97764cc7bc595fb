"""View-classifier stage, top to bottom: mesh -> data -> model -> shard -> step -> checkpoint ->
eval -> loop (the loop itself is `loop.run`, shared with pretraining).

  python -m echoprime_jax.train --config configs/views.py:tiny --workdir DIR --config.data.dir=SHARDS

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
import math
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from data_prep import views as views_lib
from data_prep.views import COARSE_VIEWS
from echoprime_jax import parallel
from echoprime_jax.data import augment as augment_lib
from echoprime_jax.data import pipeline
from echoprime_jax.data.normalize import normalize_video
from echoprime_jax.data.shards import ShardIndex, video_table
from echoprime_jax.models import convnext
from echoprime_jax.train import loop, optimizer

log = logging.getLogger("echoprime_jax.train")


def model_config(cfg: Any, num_classes: int = len(COARSE_VIEWS)) -> convnext.ConvNeXtConfig:
  mcfg = convnext.convnext(cfg.arch, num_classes=num_classes, dtype=cfg.dtype)
  if cfg.get("dropout", -1.0) >= 0:
    mcfg = mcfg.replace(stochastic_depth=cfg.dropout)
  return mcfg


def create_model(mcfg: convnext.ConvNeXtConfig, seed: int) -> convnext.ConvNeXt:
  return convnext.ConvNeXt(mcfg, rngs=nnx.Rngs(seed))


def init_state(mcfg: convnext.ConvNeXtConfig, tx: optax.GradientTransformation,
               seed: int) -> dict:
  _, params, rest = nnx.split(create_model(mcfg, seed), nnx.Param, ...)
  return {"step": jnp.zeros((), jnp.int32), "params": params, "rest": rest,
          "opt_state": tx.init(params)}


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


def clip_logits(model: convnext.ConvNeXt, video: jax.Array, frame_mask: jax.Array) -> jax.Array:
  """video: (B, T, H, W, 3) normalised; frame_mask (B, T) -> (B, K) mean logits of the
  clip's real frames."""
  b, t = video.shape[:2]
  logits = model(video.reshape(b * t, *video.shape[2:])).reshape(b, t, -1)
  weight = frame_mask.astype(logits.dtype)[..., None]
  return (logits * weight).sum(1) / jnp.maximum(weight.sum(1), 1.0)


def coarse_log_probs(logits: jax.Array, coarse_ids: tuple[int, ...]) -> jax.Array:
  """(B, K_fine) logits -> (B, 11) log-probabilities of the coarse views (log of the summed
  probabilities of each coarse view's fine children)."""
  member = np.eye(len(COARSE_VIEWS), dtype=bool)[np.asarray(coarse_ids)]  # (K_fine, 11)
  lp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  return jax.nn.logsumexp(jnp.where(member[None], lp[:, :, None], -jnp.inf), axis=1)


def train_step(state: dict, batch: dict, *, graphdef, tx, schedule, cfg: Any,
               weights: np.ndarray, coarse_ids: tuple[int, ...] | None = None
               ) -> tuple[dict, dict]:
  """One optimizer step; batch: video (B, T, H, W, 3) uint8, frame_mask (B, T), view (B,)
  int32 (-1: no label), valid (B,), and the augmentation parameters when drawn.

  coarse_ids (fine taxonomy): each class's coarse view; the loss then adds
  cfg.coarse_loss_weight x the cross-entropy of the rolled-up coarse prediction, so the
  coarse view is learned even where fine siblings are hard to tell apart."""
  video = normalize_video(augment_lib.batch_video(batch), batch["frame_mask"],
                          jnp.dtype(cfg.dtype))
  labels = batch["view"]
  labelled = (labels >= 0) & batch["valid"]
  safe = jnp.where(labelled, labels, 0)
  w = jnp.where(labelled, jnp.asarray(weights)[safe], 0.0)
  model = nnx.merge(graphdef, state["params"], state["rest"])

  def loss_fn(model):
    logits = clip_logits(model, video, batch["frame_mask"]).astype(jnp.float32)
    k = logits.shape[-1]
    targets = optax.smooth_labels(jax.nn.one_hot(safe, k), cfg.label_smoothing)
    ce = optax.softmax_cross_entropy(logits, targets)
    if coarse_ids is not None and cfg.coarse_loss_weight:
      coarse_label = jnp.asarray(coarse_ids)[safe]
      ce_coarse = -jnp.take_along_axis(coarse_log_probs(logits, coarse_ids),
                                       coarse_label[:, None], axis=1)[:, 0]
      ce = ce + cfg.coarse_loss_weight * ce_coarse
    return (ce * w).sum() / jnp.maximum(w.sum(), 1e-6), logits

  (loss, logits), grads = nnx.value_and_grad(loss_fn, has_aux=True)(model)
  _, _, rest = nnx.split(model, nnx.Param, ...)
  updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
  params = optax.apply_updates(state["params"], updates)
  hits = (jnp.argmax(logits, -1) == labels) & labelled
  metrics = {"loss": loss, "accuracy": hits.sum() / jnp.maximum(labelled.sum(), 1),
             "grad_norm": optax.global_norm(grads), "learning_rate": schedule(state["step"])}
  return {"step": state["step"] + 1, "params": params, "rest": rest,
          "opt_state": opt_state}, metrics


def predict_step(params, rest, batch: dict, *, graphdef, cfg: Any) -> jax.Array:
  """(B, K) logits of each clip (evaluation mode)."""
  model = nnx.merge(graphdef, params, rest)
  video = normalize_video(batch["video"], batch["frame_mask"], jnp.dtype(cfg.dtype))
  return clip_logits(model, video, batch["frame_mask"])


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
  """A row-normalised confusion matrix as a labelled heat map (`plots.confusion_chart`)."""
  from echoprime_jax import plots
  plots.confusion_chart(confusion, names, path)


def roll_up(logits: np.ndarray, coarse_ids: tuple[int, ...]) -> np.ndarray:
  """(N, K_fine) logits -> (N, 11) coarse probabilities: each coarse view's fine children's
  softmax probabilities summed."""
  z = logits - logits.max(1, keepdims=True)
  p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
  out = np.zeros((len(logits), len(COARSE_VIEWS)))
  np.add.at(out.T, np.asarray(coarse_ids), p.T)
  return out


class Evaluator:
  """Validation metrics over every labelled video of the evaluation split (frame 0 onwards,
  deterministic); writes the confusion matrix as PNG + JSON under WORKDIR/confusion/."""

  def __init__(self, cfg: Any, index: ShardIndex, eval_graphdef, mesh, workdir: str,
               taxonomy: views_lib.Taxonomy):
    self.dataset = pipeline.clip_dataset(
        index, cfg.data.eval_split, None, _pipeline_config(cfg, cfg.eval_batch_size, False),
        train=False, taxonomy=taxonomy)
    self.sharding = parallel.batch_sharding(mesh)
    self.predict = jax.jit(functools.partial(predict_step, graphdef=eval_graphdef, cfg=cfg))
    self.folder = os.path.join(workdir, "confusion")
    self.taxonomy = taxonomy

  def __call__(self, state: dict) -> dict[str, float]:
    from jax.experimental import multihost_utils
    labels, logits = [], []
    for batch in self.dataset:
      out = self.predict(state["params"], state["rest"], pipeline.to_global(batch, self.sharding))
      local = {"logits": out.astype(jnp.float32), "view": batch["view"],
               "valid": batch["valid"]}
      if jax.process_count() > 1:
        local = multihost_utils.process_allgather(local, tiled=True)
      keep = np.asarray(local["valid"]) & (np.asarray(local["view"]) >= 0)
      labels.append(np.asarray(local["view"])[keep])
      logits.append(np.asarray(local["logits"])[keep])
    labels, logits = np.concatenate(labels), np.concatenate(logits)
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
        os.makedirs(self.folder, exist_ok=True)
        base = os.path.join(self.folder, f"{prefix}step_{step}")
        confusion_png(confusion, names, base + ".png")
        with open(base + ".json", "w") as f:
          json.dump({"views": list(names), "confusion": confusion.tolist()}, f)
    return metrics


def _pipeline_config(cfg: Any, global_batch: int, train: bool) -> pipeline.PipelineConfig:
  d = cfg.data
  return pipeline.PipelineConfig(
      batch_size=loop.per_process(global_batch), clip_length=d.frames, clip_stride=1,
      frame_size=cfg.image_size,
      augment=augment_lib.AugmentConfig() if (train and d.augment) else None,
      seed=cfg.seed, num_epochs=None if train else 1, require_report=False,
      read_threads=d.read_threads, read_buffer=d.read_buffer,
      workers=d.workers if train else 0)


def train(cfg: Any, workdir: str) -> loop.TrainResult:
  """Runs (or resumes) the view-classifier stage; see the module docstring."""
  os.makedirs(workdir, exist_ok=True)

  # -- mesh
  mesh = parallel.make_mesh(dict(cfg.mesh))
  batch_sharding = parallel.batch_sharding(mesh)

  # -- data
  index = ShardIndex(cfg.data.dir)
  taxonomy = views_lib.taxonomy(cfg.taxonomy)
  table = video_table(index.studies(cfg.data.train_split), False, taxonomy)
  weights = class_weights(table[:, 2], len(taxonomy), cfg.balance)
  labelled = int((table[:, 2] >= 0).sum())
  if labelled == 0:
    raise ValueError(f"split {cfg.data.train_split!r} of {cfg.data.dir} has no videos with a "
                     f"view label in the {taxonomy.name!r} taxonomy (convert with --labels)")
  train_ds = pipeline.clip_dataset(index, cfg.data.train_split, None,
                                   _pipeline_config(cfg, cfg.batch_size, True), train=True,
                                   taxonomy=taxonomy)
  total_steps = int(cfg.total_steps) or max(1, math.ceil(cfg.epochs * labelled / cfg.batch_size))
  log.info("%d labelled training videos, %d %s views; class weights %s", labelled,
           len(taxonomy), taxonomy.name, np.round(weights, 2))

  # -- model and optimizer (abstract)
  mcfg = model_config(cfg, len(taxonomy))
  abstract_model = nnx.eval_shape(lambda: create_model(mcfg, cfg.seed))
  graphdef, abstract_params, _ = nnx.split(abstract_model, nnx.Param, ...)
  abstract_model.eval()
  eval_graphdef = nnx.split(abstract_model, nnx.Param, ...)[0]
  tx, schedule = optimizer.make_optimizer(cfg.optim, abstract_params, total_steps)

  # -- shardings; state created sharded (or restored onto them)
  it = iter(train_ds)
  ckpt, start, state, shardings = loop.restore_or_init(
      cfg, workdir, lambda: init_state(mcfg, tx, cfg.seed), mesh, it)
  if start == 0 and cfg.init:
    state["params"] = jax.device_put(loop.load_converted(state["params"], cfg.init,
                                                         "view classifier"), shardings["params"])

  # -- step
  step_fn = jax.jit(functools.partial(train_step, graphdef=graphdef, tx=tx, schedule=schedule,
                                      cfg=cfg, weights=weights,
                                      coarse_ids=None if taxonomy.is_coarse
                                      else taxonomy.coarse_ids()),
                    in_shardings=(shardings, batch_sharding), out_shardings=(shardings, None),
                    donate_argnums=(0,))
  first = pipeline.to_global(next(it), batch_sharding)
  compiled = step_fn.lower(state, first).compile()
  evaluator = (Evaluator(cfg, index, eval_graphdef, mesh, workdir, taxonomy)
               if cfg.eval_every else None)
  return loop.run(cfg, workdir, compiled=compiled, state=state, first=first,
                  it=it, start=start, total_steps=total_steps,
                  batch_sharding=batch_sharding, evaluator=evaluator, ckpt=ckpt, desc="views")
