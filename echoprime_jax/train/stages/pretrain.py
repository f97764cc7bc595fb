"""Stage: contrastive video-report pretraining (data, model, loss, retrieval evaluation).

  python -m echoprime_jax.train --config configs/pretrain.py:tiny --workdir DIR \
      --config.data.dir=SHARDS

Clips of the towers' frames, stride and size (cfg.towers.video) and reports tokenised to the
text tower's window (cfg.towers.text.max_length) by the run's tokenizer (given, else a
WordPiece vocabulary trained on the training reports, saved in the run folder). The loss is
CLIP's InfoNCE (or SigLIP's) over the global batch, videos of one study not negatives of each
other; the temperature is learned and clamped as CLIP's. Evaluation: retrieval recall on the
evaluation split (`recall_at_k`).
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp

from echoprime_jax import losses, parallel
from echoprime_jax.data import augment, pipeline, tokenizer
from echoprime_jax.data.normalize import normalize_video
from echoprime_jax.data.shards import ShardIndex
from echoprime_jax.inference import stage_models
from echoprime_jax.inference.batches import predict_all
from echoprime_jax.inference.frozen_towers import load_converted_towers
from echoprime_jax.evaluation.recall import recall_at_k
from echoprime_jax.run.folder import RunFolder
from echoprime_jax.train.stage import Stage, per_process


def pipeline_config(cfg: Any, batch_size: int, train: bool) -> pipeline.PipelineConfig:
  """The clip pipeline of the towers' input; batch_size per process."""
  d, video = cfg.data, cfg.towers.video
  return pipeline.PipelineConfig(
      batch_size=batch_size, clip_length=video.num_frames, clip_stride=video.clip_stride,
      frame_size=video.image_size,
      augment=augment.AugmentConfig() if (train and d.augment) else None,
      seed=cfg.seed, num_epochs=None if train else 1, read_threads=d.read_threads,
      read_buffer=d.read_buffer, workers=d.workers if train else 0)


def run_tokenizer(cfg: Any, run: RunFolder, texts: list[str]):
  """The run's tokenizer: trained once by the main process, loaded by the others."""
  is_main = jax.process_index() == 0
  tok = tokenizer.tokenizer_for_run(run.tokenizer, cfg.data.tokenizer or None, texts,
                                    cfg.data.vocab_size) if is_main else None
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    multihost_utils.sync_global_devices("tokenizer")
    tok = tok or tokenizer.tokenizer_for_run(run.tokenizer, cfg.data.tokenizer or None, [])
  return tok


def setup(cfg: Any, run: RunFolder, mesh) -> Stage:
  index = ShardIndex(cfg.data.dir)
  train_studies = index.studies(cfg.data.train_split)
  texts = [" ".join(f"{k}: {v}" for k, v in s.sections.items()) for s in train_studies]
  tok = run_tokenizer(cfg, run, texts)
  encoder = tokenizer.ReportEncoder(tok, max_len=cfg.towers.text.max_length)
  train_data = pipeline.clip_dataset(index, cfg.data.train_split, encoder,
                                     pipeline_config(cfg, per_process(cfg.batch_size), True),
                                     train=True)
  mcfg = stage_models.model_config("pretrain", cfg, vocab_size=len(tok))
  init = None
  if cfg.init.video or cfg.init.text:
    init = functools.partial(load_converted_towers, cfg.init)
  return Stage(
      name="pretrain", train_data=train_data,
      num_examples=sum(len(s.records) for s in train_studies if s.has_report),
      create_model=lambda seed: stage_models.create_model("pretrain", mcfg, seed),
      **step_parts(cfg, mesh),
      make_evaluator=lambda graphdef: Evaluator(cfg, index, encoder, graphdef, mesh),
      init_params=init)


def step_parts(cfg: Any, mesh) -> dict[str, Any]:
  """The stage's part of `step.train_step`: prepare, loss, constrain."""
  return {"prepare": functools.partial(prepare, cfg), "loss": functools.partial(loss, cfg, mesh),
          "constrain": functools.partial(clamp_temperature, cfg.loss.max_log_scale)}


def prepare(cfg: Any, batch: dict) -> dict:
  """The global batch (video uint8, frame_mask, text_ids / mask, study, and the augmentation
  parameters when the pipeline draws them) -> model inputs: the clip augmented, normalised."""
  video = normalize_video(augment.batch_video(batch), batch["frame_mask"], jnp.dtype(cfg.dtype))
  return {"video": video, "text_ids": batch["text_ids"], "text_mask": batch["text_mask"],
          "study": batch["study"]}


def contrastive_loss(cfg: Any, v: jax.Array, t: jax.Array, log_scale: jax.Array,
                     bias: jax.Array, groups: jax.Array, mesh) -> tuple[jax.Array, dict]:
  kind = cfg.loss.kind
  if kind == "clip" and cfg.loss.chunked:
    return losses.chunked_clip_loss(v, t, log_scale, groups, mesh, parallel.batch_axes(mesh))
  if kind == "clip":
    return losses.clip_loss(v, t, log_scale, groups)
  if kind == "siglip":
    return losses.siglip_loss(v, t, log_scale, bias, groups)
  raise ValueError(f"loss.kind must be 'clip' or 'siglip', got {kind!r}")


def loss(cfg: Any, mesh, model, inputs: dict) -> tuple[jax.Array, dict]:
  v, t = model(inputs["video"], inputs["text_ids"], inputs["text_mask"])
  return contrastive_loss(cfg, v, t, model.log_scale.value, model.bias.value, inputs["study"],
                          mesh)


def clamp_temperature(max_log_scale: float, params) -> tuple[Any, dict]:
  """CLIP's clamp: the temperature may not go below 1 / exp(max_log_scale) (1/100)."""
  params["log_scale"].value = jnp.clip(params["log_scale"].value, 0.0, max_log_scale)
  return params, {"temperature": jnp.exp(-params["log_scale"].value)}


def embed_step(params, rest, batch: dict, *, graphdef, dtype: str) -> dict[str, jax.Array]:
  """Evaluation embeddings (L2-normalised): video (B, D), text (B, D)."""
  from flax import nnx
  model = nnx.merge(graphdef, params, rest)
  video = normalize_video(batch["video"], batch["frame_mask"], jnp.dtype(dtype))
  v, t = model(video, batch["text_ids"], batch["text_mask"])
  return {"v": losses.l2_normalize(v), "t": losses.l2_normalize(t)}


def jit_embed_step(cfg: Any, eval_graphdef):
  """The evaluation's jitted (params, rest, batch) -> embeddings."""
  return jax.jit(functools.partial(embed_step, graphdef=eval_graphdef, dtype=cfg.dtype))


class Evaluator:
  """Retrieval recall on the evaluation split (every video once, deterministic clips). The
  dataset and the jitted embedding step are built once and reused at every evaluation."""

  def __init__(self, cfg: Any, index: ShardIndex, encoder: tokenizer.ReportEncoder,
               eval_graphdef, mesh):
    self.dataset = pipeline.clip_dataset(
        index, cfg.data.eval_split, encoder,
        pipeline_config(cfg, per_process(cfg.eval_batch_size), False), train=False)
    self.sharding = parallel.batch_sharding(mesh)
    self.embed = jit_embed_step(cfg, eval_graphdef)

  def __call__(self, state: dict) -> dict[str, float]:
    out = predict_all(lambda batch: self.embed(state["params"], state["rest"], batch),
                      self.dataset, self.sharding, carry=("study",))
    return recall_at_k(out["v"], out["t"], out["study"])
