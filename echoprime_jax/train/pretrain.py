"""Stage: contrastive video-report pretraining (model, loss, train step, retrieval evaluation).

The state is a plain pytree: {"step", "params", "rest" (NNX RNG counters/keys for dropout and
stochastic depth), "opt_state"}. `train_step(state, batch) -> (state, metrics)` is pure; the
loop jits it with explicit shardings and donates the old state.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from echoprime_jax import losses
from echoprime_jax.data import augment
from echoprime_jax.data.normalize import normalize_video
from echoprime_jax.models import towers, two_tower


def model_config(cfg: Any, vocab_size: int) -> two_tower.TwoTowerConfig:
  """The two-tower config from the stage config (text vocab sized to the tokenizer)."""
  video = towers.video_config(cfg.towers.video, cfg.dtype).replace(
      num_frames=cfg.data.clip_length)
  text = towers.text_config(cfg.towers.text, cfg.dtype)
  if cfg.data.max_text_len > text.bert.max_position_embeddings:
    raise ValueError(f"data.max_text_len {cfg.data.max_text_len} exceeds the BERT's "
                     f"{text.bert.max_position_embeddings} positions")
  text = dataclasses.replace(text, bert=text.bert.replace(vocab_size=vocab_size))
  rate = cfg.get("dropout", -1.0)
  if rate >= 0:  # one knob for every stochastic regulariser (dropout, stochastic depth)
    video = video.replace(stochastic_depth=rate, head_dropout=rate)
    text = dataclasses.replace(text, bert=text.bert.replace(
        hidden_dropout_prob=rate, attention_probs_dropout_prob=rate))
  return two_tower.TwoTowerConfig(video=video, text=text)


def create_model(mcfg: two_tower.TwoTowerConfig, seed: int) -> two_tower.TwoTower:
  return two_tower.TwoTower(mcfg, rngs=nnx.Rngs(seed))


def split_model(model: nnx.Module):
  """-> (graphdef, params, rest): trainable parameters and everything else (RNG state)."""
  return nnx.split(model, nnx.Param, ...)


def init_state(mcfg: two_tower.TwoTowerConfig, tx: optax.GradientTransformation,
               seed: int) -> dict:
  _, params, rest = split_model(create_model(mcfg, seed))
  return {"step": jnp.zeros((), jnp.int32), "params": params, "rest": rest,
          "opt_state": tx.init(params)}


def contrastive_loss(cfg: Any, v: jax.Array, t: jax.Array, log_scale: jax.Array,
                     bias: jax.Array, groups: jax.Array, mesh) -> tuple[jax.Array, dict]:
  kind = cfg.loss.kind
  if kind == "clip" and cfg.loss.chunked:
    from echoprime_jax import parallel
    return losses.chunked_clip_loss(v, t, log_scale, groups, mesh, parallel.batch_axes(mesh))
  if kind == "clip":
    return losses.clip_loss(v, t, log_scale, groups)
  if kind == "siglip":
    return losses.siglip_loss(v, t, log_scale, bias, groups)
  raise ValueError(f"loss.kind must be 'clip' or 'siglip', got {kind!r}")


def train_step(state: dict, batch: dict, *, graphdef, tx: optax.GradientTransformation,
               schedule, cfg: Any, mesh) -> tuple[dict, dict]:
  """One optimizer step on a global batch (video uint8, frame_mask, text_ids/mask, study, and
  the augmentation parameters when the pipeline draws them)."""
  dtype = jnp.dtype(cfg.dtype)
  video = normalize_video(augment.batch_video(batch), batch["frame_mask"], dtype)

  model = nnx.merge(graphdef, state["params"], state["rest"])

  def loss_fn(model):
    v, t = model(video, batch["text_ids"], batch["text_mask"])
    return contrastive_loss(cfg, v, t, model.log_scale.value, model.bias.value,
                            batch["study"], mesh)

  # nnx.value_and_grad: gradients for the Params; RNG counters (dropout, stochastic depth)
  # advance inside the model and are read back below.
  (loss, aux), grads = nnx.value_and_grad(loss_fn, has_aux=True)(model)
  _, _, rest = split_model(model)
  updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
  params = optax.apply_updates(state["params"], updates)
  # CLIP's clamp: the temperature may not go below 1/100.
  params["log_scale"].value = jnp.clip(params["log_scale"].value, 0.0, cfg.loss.max_log_scale)
  metrics = {"loss": loss, "grad_norm": optax.global_norm(grads),
             "learning_rate": schedule(state["step"]),
             "temperature": jnp.exp(-params["log_scale"].value), **aux}
  new_state = {"step": state["step"] + 1, "params": params, "rest": rest,
               "opt_state": opt_state}
  return new_state, metrics


def embed_step(params, rest, batch: dict, *, graphdef, cfg: Any) -> tuple[jax.Array, jax.Array]:
  """Evaluation embeddings (L2-normalised): (video (B, D), text (B, D))."""
  model = nnx.merge(graphdef, params, rest)
  video = normalize_video(batch["video"], batch["frame_mask"], jnp.dtype(cfg.dtype))
  v, t = model(video, batch["text_ids"], batch["text_mask"])
  return losses.l2_normalize(v), losses.l2_normalize(t)


def own_rank(sim: np.ndarray) -> np.ndarray:
  """sim (Q, Q), query i's own candidate in column i -> (Q,) its 0-based rank among the
  candidates (ties broken by column, as argsort does): a hit at k is rank < k."""
  order = np.argsort(-sim, axis=1)
  return np.argmax(order == np.arange(len(sim))[:, None], axis=1)


def recall_at_k(video: np.ndarray, text: np.ndarray, study: np.ndarray,
                ks: tuple[int, ...] = (1, 5, 10)) -> dict[str, float]:
  """Retrieval recall at video and study level.

  video (N, D), text (N, D) L2-normalised, study (N,) ids; every video's report is its
  study's. Reports are deduplicated per study. video->report: rank the S reports for each
  video; report->video: rank the N videos for each report (a hit is any video of the study).
  Study level: a study's embedding is the normalised mean of its videos'. `mean_R@10` averages
  the four R@10 (the default metric for keeping the best checkpoint).
  """
  studies, first = np.unique(study, return_index=True)
  reports = text[first]  # (S, D)
  owner = np.searchsorted(studies, study)  # video -> report row
  sim = video @ reports.T  # (N, S)
  out = {}
  v_rank = np.argsort(-sim, axis=1)
  t_rank = np.argsort(-sim.T, axis=1)  # (S, N)
  mean = np.stack([video[owner == s].mean(0) for s in range(len(studies))])
  mean /= np.linalg.norm(mean, axis=1, keepdims=True)
  ssim = mean @ reports.T
  s_rank, r_rank = own_rank(ssim), own_rank(ssim.T)
  for k in ks:
    out[f"video_to_report_R@{k}"] = float(np.mean([owner[i] in v_rank[i, :k]
                                                   for i in range(len(video))]))
    out[f"report_to_video_R@{k}"] = float(np.mean([np.any(owner[t_rank[s, :k]] == s)
                                                   for s in range(len(studies))]))
    out[f"study_to_report_R@{k}"] = float(np.mean(s_rank < k))
    out[f"report_to_study_R@{k}"] = float(np.mean(r_rank < k))
  if 10 in ks:
    out["mean_R@10"] = float(np.mean([out[f"{d}_R@10"] for d in (
        "video_to_report", "report_to_video", "study_to_report", "report_to_study")]))
  out["num_videos"], out["num_studies"] = float(len(video)), float(len(studies))
  out["chance_R@10"] = float(min(10, len(studies)) / len(studies))
  return out


def jit_train_step(graphdef, tx, schedule, cfg, mesh, state_shardings, batch_sharding):
  step = functools.partial(train_step, graphdef=graphdef, tx=tx, schedule=schedule, cfg=cfg,
                           mesh=mesh)
  return jax.jit(step, in_shardings=(state_shardings, batch_sharding),
                 out_shardings=(state_shardings, None), donate_argnums=(0,))


def flops_per_step(compiled) -> float:
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float(cost.get("flops", 0.0)) if cost else 0.0
