"""Stage: the anatomical-attention MIL aggregator (frozen towers -> cached embeddings -> data,
model, section loss, section retrieval evaluation, exports).

  python -m echoprime_jax.train --config configs/mil.py:tiny --workdir DIR \
      --config.data.dir=SHARDS --config.towers_from=PRETRAIN_RUN

Inputs. Every video and report section of the train and eval splits is embedded once by the
frozen towers (`inference/embeddings.py`, cached in WORKDIR/embeddings/); a study is then a bag of
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
`attention_table.read_csv` or `--config.table`), and for each split
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
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from data_prep.views import COARSE_VIEWS
from echoprime_jax import losses, parallel
from echoprime_jax.data import study_features
from echoprime_jax.data.shards import ShardIndex
from echoprime_jax.data.split_embeddings import SplitEmbeddings, study_mean
from echoprime_jax.inference import attention_table, frozen_towers, stage_models
from echoprime_jax.inference import embeddings as embeddings_lib
from echoprime_jax.inference.mil_pooling import SplitPooler
from echoprime_jax.models import mil
from echoprime_jax.run.folder import RunFolder
from echoprime_jax.train import trainer
from echoprime_jax.train.stage import Stage, per_process
from echoprime_jax.train.stages.pretrain import clamp_temperature

log = logging.getLogger("echoprime_jax.train")


def resolve_config(cfg: Any) -> Any:
  """With towers_from, the towers are that pretraining run's: they replace cfg.towers, so the
  run folder records what it embedded with (and the aggregator's size follows embed_dim)."""
  if cfg.towers_from:
    towers = RunFolder(cfg.towers_from).read_config("pretrain").towers
    with cfg.unlocked():
      cfg.towers = towers
  return cfg


def train(cfg: Any, workdir: str, *, allow_safe_changes: bool = False) -> trainer.TrainResult:
  """Embeds both splits with the frozen towers (cached), then trains and exports; with
  cfg.table, evaluates and exports that fixed table instead."""
  run = RunFolder(workdir)
  run.check_resume(cfg.to_dict(), allow_safe_changes)  # before the towers' long pass
  mesh = parallel.make_mesh(dict(cfg.mesh))
  train_emb, eval_emb = embed_splits(cfg, run, mesh)
  return train_on_embeddings(cfg, workdir, train_emb, eval_emb, mesh,
                             allow_safe_changes=allow_safe_changes)


def embed_splits(cfg: Any, run: RunFolder, mesh) -> tuple[SplitEmbeddings, SplitEmbeddings]:
  """Every video and report section of the train and eval splits, embedded once by the frozen
  towers (cached in the run folder)."""
  index = ShardIndex(cfg.data.dir)
  if cfg.towers_from:
    towers = frozen_towers.from_pretrain_run(cfg.towers_from, cfg.data.section_len, mesh,
                                             cfg.dtype)
  else:
    texts = [" ".join(f"{k}: {v}" for k, v in s.sections.items())
             for s in index.studies(cfg.data.train_split)]
    towers = frozen_towers.from_stage_config(cfg, run.root, texts)
  return tuple(embeddings_lib.cached_split(towers, index, split, run.embeddings(split),
                                           batch_size=cfg.data.embed_batch_size, mesh=mesh,
                                           dtype=cfg.dtype)
               for split in (cfg.data.train_split, cfg.data.eval_split))


def train_on_embeddings(cfg: Any, workdir: str, train_emb: SplitEmbeddings,
                        eval_emb: SplitEmbeddings, mesh, *, allow_safe_changes: bool = False
                        ) -> trainer.TrainResult:
  """The stage from cached embeddings on: train (or evaluate a fixed table), then export."""
  run = RunFolder(workdir)
  dim = train_emb.video_embedding.shape[1]
  if dim != cfg.towers.embed_dim:
    raise ValueError(f"the embeddings are {dim}-d, --config.towers.embed_dim is "
                     f"{cfg.towers.embed_dim}")
  if cfg.table:
    if jax.process_index() == 0:
      run.write_config(cfg.to_dict())
    return evaluate_table(cfg, run, train_emb, eval_emb, mesh)
  setup = functools.partial(_setup, train_emb=train_emb, eval_emb=eval_emb)
  return trainer.train(setup, cfg, workdir, allow_safe_changes=allow_safe_changes)


def _setup(cfg: Any, run: RunFolder, mesh, *, train_emb: SplitEmbeddings,
           eval_emb: SplitEmbeddings) -> Stage:
  fcfg = study_features.FeatureConfig(per_process(cfg.batch_size), cfg.data.max_videos,
                                      len(COARSE_VIEWS), cfg.seed, None)
  n_train = int((train_emb.section_text >= 0).any(1).sum())
  log.info("%d training studies, %d videos", n_train, len(train_emb.video_study))
  mcfg = stage_models.model_config("mil", cfg)

  def finish(result, params, rest):
    model = nnx.eval_shape(lambda: stage_models.create_model("mil", mcfg, 0))
    model.eval()
    graphdef = nnx.split(model, nnx.Param, ...)[0]
    for emb, split in ((eval_emb, cfg.data.eval_split), (train_emb, cfg.data.train_split)):
      table = run.attention_table if split == cfg.data.eval_split else None
      export(run, cfg, emb, split, Evaluator(cfg, emb, graphdef, mesh, run).pooler(params, rest),
             table)

  return Stage(
      name="mil", train_data=study_features.dataset(train_emb, fcfg, train=True),
      num_examples=n_train,
      create_model=lambda seed: stage_models.create_model("mil", mcfg, seed),
      **step_parts(cfg),
      make_evaluator=lambda graphdef: Evaluator(cfg, eval_emb, graphdef, mesh, run),
      finish=finish)


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


def step_parts(cfg: Any) -> dict[str, Any]:
  """The stage's part of `step.train_step`: the batch as it is, the section loss, the clamp."""
  return {"prepare": lambda batch: batch, "loss": loss,
          "constrain": functools.partial(clamp_temperature, cfg.mil.max_log_scale)}


def loss(model, batch: dict) -> tuple[jax.Array, dict]:
  """Section InfoNCE of one batch of studies (see `study_features`)."""
  pooled, _ = model(batch["features"], batch["video_mask"])
  return section_loss(pooled, batch["targets"], batch["target_text"], model.log_scale.value,
                      batch["valid"])


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


class Evaluator:
  """Section retrieval on one split (from its cached embeddings) at every evaluation, with
  uniform pooling's as the baseline; writes the attention table of each evaluated step."""

  def __init__(self, cfg: Any, emb: SplitEmbeddings, graphdef, mesh, run: RunFolder):
    self.emb, self.run = emb, run
    self.pooler = SplitPooler(graphdef, emb, batch_size=cfg.eval_batch_size,
                              max_videos=cfg.data.max_videos, mesh=mesh, seed=cfg.seed)
    self.uniform = uniform_pooled(emb)
    r = section_recall(self.uniform, emb.section_embedding, emb.section_text, emb.sections)
    self.baseline = {f"uniform_{k}": v for k, v in r.items() if k.startswith("section_R@")}

  def __call__(self, state: dict) -> dict[str, float]:
    out = self.pooler(state["params"], state["rest"])
    e = self.emb
    metrics = section_recall(out["pooled"], e.section_embedding, e.section_text, e.sections)
    metrics.update(self.baseline)
    if jax.process_index() == 0:
      table, _ = attention_table.mean_attention(out["attention"], out["views"],
                                                out["video_mask"], len(COARSE_VIEWS))
      step = int(jax.device_get(state["step"])) if "step" in state else 0
      path = self.run.artefact("attention", f"step_{step}.csv")
      os.makedirs(os.path.dirname(path), exist_ok=True)
      attention_table.write_csv(attention_table.min_max_rows(table), path, e.sections)
    return metrics


def uniform_pooled(emb: SplitEmbeddings) -> np.ndarray:
  """(M, S, D): every section of a study is the normalised plain mean of its videos."""
  return np.repeat(study_mean(emb)[:, None], len(emb.sections), axis=1)


def export(run: RunFolder, cfg: Any, emb: SplitEmbeddings, split: str,
           out: dict[str, np.ndarray], table_path: str | None = None) -> None:
  """A split's pooling (`SplitPooler` outputs) -> the run's export/<split>_attention.csv,
  <split>_sections.npz and <split>_section_ranks.npz; with table_path, the split's attention
  table (EchoPrime's CSV) too. Process 0 writes."""
  del cfg
  if jax.process_index() != 0:
    return
  e = emb
  os.makedirs(run.export(), exist_ok=True)
  with open(run.video_attention(split), "w", newline="") as f:
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
  uniform = section_ranks(uniform_pooled(e), e.section_embedding, e.section_text)
  np.savez(run.section_ranks(split), study_ids=e.study_ids,
           sections=np.asarray(e.sections, str), study=learned["study"],
           section=learned["section"], candidates=learned["candidates"],
           rank=learned["rank"], uniform_rank=uniform["rank"])
  np.savez(run.section_embeddings(split), study_ids=e.study_ids,
           sections=np.asarray(e.sections, str), section_embedding=out["pooled"],
           present=out["video_mask"].any(1)[:, None] & np.ones((1, len(e.sections)), bool))
  if table_path:
    table, _ = attention_table.mean_attention(out["attention"], out["views"], out["video_mask"],
                                              len(COARSE_VIEWS))
    attention_table.write_csv(attention_table.min_max_rows(table), table_path, e.sections)
  log.info("exported %s attention and section embeddings to %s", split, run.export())


def evaluate_table(cfg: Any, run: RunFolder, train_emb: SplitEmbeddings,
                   eval_emb: SplitEmbeddings, mesh) -> trainer.TrainResult:
  """cfg.table: EchoPrime's fixed (section, view) table as the aggregator; evaluated on the
  eval split and exported for both, nothing trained."""
  table = attention_table.read_csv(cfg.table, train_emb.sections)
  fixed = mil.FixedTableMIL(table, cfg.towers.embed_dim)
  graphdef, params, rest = nnx.split(fixed, nnx.Param, ...)
  evaluator = Evaluator(cfg, eval_emb, graphdef, mesh, run)
  metrics = evaluator({"params": params, "rest": rest})
  log.info("fixed table %s: %s", cfg.table, metrics)
  export(run, cfg, eval_emb, cfg.data.eval_split, evaluator.pooler(params, rest))
  export(run, cfg, train_emb, cfg.data.train_split,
         Evaluator(cfg, train_emb, graphdef, mesh, run).pooler(params, rest))
  return trainer.TrainResult(metrics, {"params": params, "rest": rest}, 0)
