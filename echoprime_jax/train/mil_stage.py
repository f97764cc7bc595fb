"""Anatomical-attention MIL stage, top to bottom: mesh -> frozen towers -> cached embeddings ->
model -> shard -> step -> checkpoint -> eval -> loop (`loop.run`) -> export.

  python -m echoprime_jax.train --config configs/mil.py:tiny --workdir DIR \
      --config.data.dir=SHARDS --config.towers_from=PRETRAIN_RUN

Inputs. Every video and report section of the train and eval splits is embedded once by the
frozen towers (`embeddings.py`, cached in WORKDIR/embeddings/); a study is then a bag of
per-video features, EchoPrime's 512 + 11 layout (L2-normalised video embedding ++ view
one-hot), and up to 15 section targets (the text tower's embedding of each section's text).

Target: the paper does not publish what its MIL module was trained against. Here each section's
pooled study embedding is trained, with a symmetric InfoNCE loss across the studies of the
batch, to retrieve the frozen text tower's embedding of *that study's* text for the section.
Why this target: (1) it is what the section embedding is used for downstream: EchoPrime
composes a report section by section from the nearest candidates in the text tower's space;
(2) a regression to the text embedding (cosine or L2) is minimised by the batch's average
report, and most section texts are "normal", so it would not need to tell studies apart,
while contrastive negatives reward attending to the videos that distinguish this study's
finding; (3) only the attention and one projection are trained, so the towers' joint space
(and everything built on it) is unchanged. Studies whose section reads the same are not
negatives of each other (same-text pairs are masked, like videos of one study in
pretraining); absent sections and padding take no part. The temperature is learned and
clamped as CLIP's.

Evaluation (eval split): per section, each study's pooled embedding ranks the split's distinct
texts of that section: `section_R@1` / `section_R@5` over all (study, section) queries of the
sections with at least two distinct texts, with `chance_section_R@k`, and the same for uniform
pooling (the plain mean of a study's videos; no MIL) as `uniform_section_R@k`: the baseline
the aggregator must beat. The attention table (mean attention per (section, view) relative to
uniform, min-max scaled per section) is written at every evaluation to
WORKDIR/attention/step_N.csv in EchoPrime's format.

Outputs at the end (from the best evaluated checkpoint, the last without best_metric):
WORKDIR/attention_table.csv (EchoPrime's format, from the eval split; load it anywhere with
`section_table.read_csv` or `--config.table`), and for each split
WORKDIR/export/<split>_attention.csv (per video: study, record, view, its attention in each
section), WORKDIR/export/<split>_sections.npz (study_ids, section_embedding (M, S, D)
L2-normalised, present (M, S)) and WORKDIR/export/<split>_section_ranks.npz (per section
query: study, section, candidates, the learned pooling's rank and uniform pooling's; for
intervals over studies). `--config.table=CSV` skips training and evaluates / exports
with that fixed table (e.g. EchoPrime's released one).
"""

from __future__ import annotations

import csv
import functools
import logging
import math
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from data_prep.views import COARSE_VIEWS
from echoprime_jax import embeddings as embeddings_lib
from echoprime_jax import losses, parallel
from echoprime_jax.data import pipeline, study_features
from echoprime_jax.data.shards import ShardIndex
from echoprime_jax.models import mil, section_table
from echoprime_jax.train import frozen_towers, loop, optimizer

log = logging.getLogger("echoprime_jax.train")


def model_config(cfg: Any, embed_dim: int) -> mil.MILConfig:
  return mil.MILConfig(num_sections=len(section_table.TABLE_SECTIONS),
                       feature_dim=embed_dim + len(COARSE_VIEWS), embed_dim=embed_dim,
                       hidden_dim=cfg.mil.hidden_dim, out_dim=embed_dim,
                       init_temperature=cfg.mil.init_temperature,
                       attention=cfg.mil.get("attention", "gated"))  # older runs: gated


def abstract_graphdef(cfg: Any, embed_dim: int):
  """The aggregator's graphdef (no parameters allocated)."""
  mcfg = model_config(cfg, embed_dim)
  return nnx.split(nnx.eval_shape(lambda: mil.GatedAttentionMIL(mcfg, rngs=nnx.Rngs(0))),
                   nnx.Param, ...)[0]


def init_state(mcfg: mil.MILConfig, tx: optax.GradientTransformation, seed: int) -> dict:
  _, params, rest = nnx.split(mil.GatedAttentionMIL(mcfg, rngs=nnx.Rngs(seed)), nnx.Param, ...)
  return {"step": jnp.zeros((), jnp.int32), "params": params, "rest": rest,
          "opt_state": tx.init(params)}


def restore_run(run_dir: str, embed_dim: int, mesh) -> tuple[Any, Any, Any, Any, int]:
  """A MIL run folder's (cfg, graphdef, params, rest, step) at its best kept checkpoint,
  replicated on `mesh` (the folder is opened read-only)."""
  cfg = frozen_towers.run_config(run_dir, "mil")
  mcfg = model_config(cfg, embed_dim)
  abstract = nnx.state(nnx.eval_shape(lambda: mil.GatedAttentionMIL(mcfg, rngs=nnx.Rngs(0))),
                       nnx.Param)
  tx, _ = optimizer.make_optimizer(cfg.optim, abstract, 1)
  step, state = frozen_towers.restore_best(run_dir, cfg,
                                           lambda: init_state(mcfg, tx, cfg.seed), mesh)
  log.info("MIL aggregator from %s, step %d", run_dir, step)
  return cfg, abstract_graphdef(cfg, embed_dim), state["params"], state["rest"], int(step)


def section_loss(pooled: jax.Array, targets: jax.Array, target_text: jax.Array,
                 log_scale: jax.Array, valid: jax.Array) -> tuple[jax.Array, dict]:
  """pooled, targets (B, S, D); target_text (B, S) int (-1 absent); valid (B,) ->
  (loss, aux): per section, InfoNCE across the batch's studies (same text = not a negative),
  averaged over all (study, section) pairs present."""
  present = (target_text >= 0) & valid[:, None]  # (B, S)

  def one(p, t, g, ok):
    loss, aux = losses.clip_loss(p, t, log_scale, g, ok)
    return loss, aux["accuracy"]

  per_loss, per_acc = jax.vmap(one, in_axes=(1, 1, 1, 1))(pooled, targets, target_text, present)
  count = present.sum(0).astype(jnp.float32)  # (S,)
  total = jnp.maximum(count.sum(), 1.0)
  return (per_loss * count).sum() / total, {"accuracy": (per_acc * count).sum() / total,
                                             "pairs": count.sum()}


def train_step(state: dict, batch: dict, *, graphdef, tx, schedule, cfg: Any
               ) -> tuple[dict, dict]:
  """One optimizer step on a batch of studies (see `study_features`)."""
  model = nnx.merge(graphdef, state["params"], state["rest"])

  def loss_fn(model):
    pooled, attention = model(batch["features"], batch["video_mask"])
    loss, aux = section_loss(pooled, batch["targets"], batch["target_text"],
                             model.log_scale.value, batch["valid"])
    return loss, aux

  (loss, aux), grads = nnx.value_and_grad(loss_fn, has_aux=True)(model)
  _, _, rest = nnx.split(model, nnx.Param, ...)
  updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
  params = optax.apply_updates(state["params"], updates)
  params["log_scale"].value = jnp.clip(params["log_scale"].value, 0.0, cfg.mil.max_log_scale)
  metrics = {"loss": loss, "grad_norm": optax.global_norm(grads),
             "learning_rate": schedule(state["step"]),
             "temperature": jnp.exp(-params["log_scale"].value), **aux}
  return {"step": state["step"] + 1, "params": params, "rest": rest,
          "opt_state": opt_state}, metrics


def predict(model, batch: dict) -> tuple[jax.Array, jax.Array]:
  """-> (section embeddings (B, S, D) L2-normalised, attention (B, S, V))."""
  pooled, attention = model(batch["features"], batch["video_mask"])
  return losses.l2_normalize(pooled), attention


def section_ranks(pooled: np.ndarray, targets: np.ndarray, target_text: np.ndarray
                  ) -> dict[str, np.ndarray]:
  """Section retrieval queries: for each section with >= 2 distinct texts, every study that
  has it ranks the distinct texts by cosine. pooled, targets (M, S, D) normalised; target_text
  (M, S) (-1 absent) -> one entry per query: study (Q,) and section (Q,) indices, rank (Q,)
  of the study's own text (0 = first), candidates (Q,) the number of distinct texts."""
  out: dict[str, list[np.ndarray]] = {"study": [], "section": [], "rank": [], "candidates": []}
  for s in range(target_text.shape[1]):
    present = target_text[:, s] >= 0
    ids, first = np.unique(target_text[present, s], return_index=True)
    if len(ids) < 2:
      continue
    candidates = targets[present, s][first]  # (C, D)
    sim = pooled[present, s] @ candidates.T  # (Q, C)
    truth = np.searchsorted(ids, target_text[present, s])
    rank = (sim > sim[np.arange(len(truth)), truth][:, None]).sum(1)
    out["study"].append(np.flatnonzero(present))
    out["section"].append(np.full(len(rank), s))
    out["rank"].append(rank)
    out["candidates"].append(np.full(len(rank), len(ids)))
  return {k: np.concatenate(v) if v else np.zeros(0, np.int64) for k, v in out.items()}


def section_recall(pooled: np.ndarray, targets: np.ndarray, target_text: np.ndarray,
                   sections: tuple[str, ...], ks: tuple[int, ...] = (1, 5)
                   ) -> dict[str, float]:
  """`section_ranks` summarised: section_R@k over all queries, chance_section_R@k (a random
  ranking's expectation), per-section R@1 as `R@1/<section>`, section_queries."""
  q = section_ranks(pooled, targets, target_text)
  out: dict[str, float] = {}
  for s in np.unique(q["section"]):
    out[f"R@1/{sections[s]}"] = float(np.mean(q["rank"][q["section"] == s] < 1))
  for k in ks:
    hit = q["rank"] < k
    out[f"section_R@{k}"] = float(np.mean(hit)) if len(hit) else 0.0
    chance = np.minimum(k, q["candidates"]) / np.maximum(q["candidates"], 1)
    out[f"chance_section_R@{k}"] = float(np.mean(chance)) if len(hit) else 0.0
  out["section_queries"] = float(len(q["rank"]))
  return out


def attention_table(attention: np.ndarray, views: np.ndarray, video_mask: np.ndarray,
                    num_views: int) -> tuple[np.ndarray, np.ndarray]:
  """Mean attention per (section, view), relative to uniform (attention x the study's number
  of videos: 1 = an average video's share). attention (M, S, V), views / video_mask (M, V) ->
  (table (S, K), videos per view (K,)); views never seen get the row minimum."""
  n = video_mask.sum(1, keepdims=True)  # (M, 1)
  rel = attention * n[:, None, :]  # (M, S, V)
  known = video_mask & (views >= 0) & (views < num_views)
  one_hot = np.eye(num_views)[np.where(known, views, 0)] * known[..., None]  # (M, V, K)
  total = np.einsum("msv,mvk->sk", rel, one_hot)
  count = one_hot.sum((0, 1))
  table = np.where(count > 0, total / np.maximum(count, 1), np.nan)
  if np.isnan(table).all():
    return np.zeros_like(total), count
  row_min = np.nanmin(np.where(count > 0, table, np.nan), axis=1, keepdims=True)
  return np.where(count > 0, table, row_min), count


class Evaluator:
  """Predicts every study of one split (from its cached embeddings): metrics, attention table,
  exports. Built once; `__call__(state)` is `loop.run`'s evaluator."""

  def __init__(self, cfg: Any, emb: embeddings_lib.SplitEmbeddings, graphdef, mesh,
               workdir: str, split: str):
    self.emb, self.workdir, self.split = emb, workdir, split
    self.dataset = study_features.dataset(
        emb, study_features.FeatureConfig(loop.per_process(cfg.eval_batch_size),
                                          cfg.data.max_videos, len(COARSE_VIEWS), cfg.seed, 1),
        train=False)
    self.sharding = parallel.batch_sharding(mesh)
    self.predict = jax.jit(lambda params, rest, batch: predict(
        nnx.merge(graphdef, params, rest), batch))
    self.uniform = self._uniform_pooled()
    r = section_recall(self.uniform, emb.section_embedding, emb.section_text, emb.sections)
    self.baseline = {f"uniform_{k}": v for k, v in r.items() if k.startswith("section_R@")}

  def _uniform_pooled(self) -> np.ndarray:
    """(M, S, D): every section of a study is the normalised plain mean of its videos."""
    e = self.emb
    pooled = np.zeros_like(e.section_embedding[:, 0])
    np.add.at(pooled, e.video_study, e.video_embedding)
    pooled /= np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
    return np.repeat(pooled[:, None], len(e.sections), axis=1)

  def outputs(self, params, rest) -> dict[str, np.ndarray]:
    """Every study of the split: pooled (M, S, D), attention (M, S, V), video_index (M, V),
    views (M, V), video_mask (M, V), in study order."""
    from jax.experimental import multihost_utils
    parts: dict[str, list[np.ndarray]] = {}
    for batch in self.dataset:
      pooled, attention = self.predict(params, rest, pipeline.to_global(batch, self.sharding))
      local = {"pooled": pooled, "attention": attention, "video_index": batch["video_index"],
               "views": batch["views"], "video_mask": batch["video_mask"],
               "study": batch["study"], "valid": batch["valid"]}
      if jax.process_count() > 1:
        local = multihost_utils.process_allgather(local, tiled=True)
      for k, v in local.items():
        parts.setdefault(k, []).append(np.asarray(v))
    out = {k: np.concatenate(v) for k, v in parts.items()}
    keep = out.pop("valid")
    order = np.argsort(out["study"][keep], kind="stable")
    return {k: v[keep][order] for k, v in out.items()}

  def __call__(self, state: dict) -> dict[str, float]:
    out = self.outputs(state["params"], state["rest"])
    e = self.emb
    metrics = section_recall(out["pooled"], e.section_embedding, e.section_text, e.sections)
    metrics.update(self.baseline)
    if jax.process_index() == 0:
      table, _ = attention_table(out["attention"], out["views"], out["video_mask"],
                                 len(COARSE_VIEWS))
      folder = os.path.join(self.workdir, "attention")
      os.makedirs(folder, exist_ok=True)
      step = int(jax.device_get(state["step"])) if "step" in state else 0
      section_table.write_csv(section_table.min_max_rows(table),
                              os.path.join(folder, f"step_{step}.csv"), e.sections)
    return metrics

  def export(self, params, rest, table_path: str | None = None) -> None:
    """WORKDIR/export/<split>_attention.csv and <split>_sections.npz; with table_path, the
    attention table (EchoPrime's CSV) of this split too. Process 0 writes."""
    out = self.outputs(params, rest)
    if jax.process_index() != 0:
      return
    e = self.emb
    folder = os.path.join(self.workdir, "export")
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, f"{self.split}_attention.csv"), "w", newline="") as f:
      writer = csv.writer(f)
      writer.writerow(["study_id", "record", "view", *e.sections])
      for m in range(e.num_studies):
        for slot in np.flatnonzero(out["video_mask"][m]):
          row = int(out["video_index"][m, slot])
          view = int(e.video_view[row])
          writer.writerow([e.study_ids[m], int(e.video_record[row]),
                           COARSE_VIEWS[view] if view >= 0 else "",
                           *(f"{x:.6g}" for x in out["attention"][m, :, slot])])
    # per query, for intervals over studies: the learned pooling's and uniform pooling's rank
    learned = section_ranks(out["pooled"], e.section_embedding, e.section_text)
    uniform = section_ranks(self.uniform, e.section_embedding, e.section_text)
    np.savez(os.path.join(folder, f"{self.split}_section_ranks.npz"), study_ids=e.study_ids,
             sections=np.asarray(e.sections, str), study=learned["study"],
             section=learned["section"], candidates=learned["candidates"],
             rank=learned["rank"], uniform_rank=uniform["rank"])
    np.savez(os.path.join(folder, f"{self.split}_sections.npz"), study_ids=e.study_ids,
             sections=np.asarray(e.sections, str), section_embedding=out["pooled"],
             present=out["video_mask"].any(1)[:, None] & np.ones((1, len(e.sections)), bool))
    if table_path:
      table, _ = attention_table(out["attention"], out["views"], out["video_mask"],
                                 len(COARSE_VIEWS))
      section_table.write_csv(section_table.min_max_rows(table), table_path, e.sections)
    log.info("exported %s attention and section embeddings to %s", self.split, folder)


def train(cfg: Any, workdir: str) -> loop.TrainResult:
  """Runs (or resumes) the MIL stage, then exports; see the module docstring."""
  os.makedirs(workdir, exist_ok=True)

  # -- mesh
  mesh = parallel.make_mesh(dict(cfg.mesh))

  # -- frozen towers -> cached embeddings of both splits
  index = ShardIndex(cfg.data.dir)
  if cfg.towers_from:
    towers = frozen_towers.from_pretrain_run(cfg.towers_from, cfg.data.section_len, mesh,
                                             cfg.dtype)
  else:
    texts = [" ".join(f"{k}: {v}" for k, v in s.sections.items())
             for s in index.studies(cfg.data.train_split)]
    towers = frozen_towers.from_config(cfg, mesh, workdir, texts)
  train_emb, eval_emb = (
      embeddings_lib.cached_split(towers, index, split,
                                  os.path.join(workdir, "embeddings", f"{split}.npz"),
                                  batch_size=cfg.data.embed_batch_size, mesh=mesh,
                                  dtype=cfg.dtype)
      for split in (cfg.data.train_split, cfg.data.eval_split))
  del towers  # the towers are not needed past this point
  return train_on_embeddings(cfg, workdir, train_emb, eval_emb, mesh)


def train_on_embeddings(cfg: Any, workdir: str, train_emb: embeddings_lib.SplitEmbeddings,
                        eval_emb: embeddings_lib.SplitEmbeddings, mesh) -> loop.TrainResult:
  """The stage from cached embeddings on: train (or evaluate a fixed table), then export."""
  batch_sharding = parallel.batch_sharding(mesh)
  embed_dim = train_emb.video_embedding.shape[1]

  if cfg.table:  # a fixed table: evaluate and export, nothing to train
    table = section_table.read_csv(cfg.table, train_emb.sections)
    fixed = mil.FixedTableMIL(table, embed_dim)
    graphdef, params, rest = nnx.split(fixed, nnx.Param, ...)
    evaluator = Evaluator(cfg, eval_emb, graphdef, mesh, workdir, cfg.data.eval_split)
    metrics = evaluator({"params": params, "rest": rest})
    log.info("fixed table %s: %s", cfg.table, metrics)
    for emb, split in ((train_emb, cfg.data.train_split), (eval_emb, cfg.data.eval_split)):
      Evaluator(cfg, emb, graphdef, mesh, workdir, split).export(params, rest)
    return loop.TrainResult(metrics, {"params": params, "rest": rest}, 0)

  # -- data
  local_batch = loop.per_process(cfg.batch_size)
  fcfg = study_features.FeatureConfig(local_batch, cfg.data.max_videos, len(COARSE_VIEWS),
                                      cfg.seed, None)
  train_ds = study_features.dataset(train_emb, fcfg, train=True)
  n_train = int((train_emb.section_text >= 0).any(1).sum())
  total_steps = int(cfg.total_steps) or max(1, math.ceil(cfg.epochs * n_train / cfg.batch_size))
  log.info("%d training studies, %d videos; %d steps", n_train, len(train_emb.video_study),
           total_steps)

  # -- model and optimizer (abstract)
  mcfg = model_config(cfg, embed_dim)
  abstract = nnx.eval_shape(lambda: mil.GatedAttentionMIL(mcfg, rngs=nnx.Rngs(cfg.seed)))
  graphdef, abstract_params, _ = nnx.split(abstract, nnx.Param, ...)
  tx, schedule = optimizer.make_optimizer(cfg.optim, abstract_params, total_steps)

  # -- shardings; state created sharded (or restored onto them)
  it = iter(train_ds)
  ckpt, start, state, shardings = loop.restore_or_init(
      cfg, workdir, lambda: init_state(mcfg, tx, cfg.seed), mesh, it)

  # -- step
  step_fn = jax.jit(functools.partial(train_step, graphdef=graphdef, tx=tx, schedule=schedule,
                                      cfg=cfg),
                    in_shardings=(shardings, batch_sharding), out_shardings=(shardings, None),
                    donate_argnums=(0,))
  first = pipeline.to_global(next(it), batch_sharding)
  compiled = step_fn.lower(state, first).compile()
  evaluator = Evaluator(cfg, eval_emb, graphdef, mesh, workdir, cfg.data.eval_split)
  result = loop.run(cfg, workdir, compiled=compiled, state=state, first=first, it=it,
                    start=start, total_steps=total_steps, batch_sharding=batch_sharding,
                    evaluator=evaluator if cfg.eval_every else None, ckpt=ckpt, desc="mil")

  # -- export, with the best evaluated checkpoint (as `export.py` and later stages load it)
  params, rest = result.state["params"], result.state["rest"]
  if result.best_step is not None and result.best_step != result.step:
    _, best = frozen_towers.restore_best(workdir, cfg, lambda: init_state(mcfg, tx, cfg.seed),
                                         mesh)
    params, rest = best["params"], best["rest"]
    log.info("exporting with the best checkpoint, step %d", result.best_step)
  evaluator.export(params, rest, os.path.join(workdir, "attention_table.csv"))
  Evaluator(cfg, train_emb, graphdef, mesh, workdir, cfg.data.train_split).export(params, rest)
  return result
