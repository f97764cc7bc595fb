"""The frozen video and text towers a later stage (MIL, export, retrieval) embeds with.

Three sources, in order of preference:
1. a pretraining run folder (`configs/pretrain.py` output): its config.json rebuilds the
   towers, its tokenizer/ reads the text, and the parameters come from its best kept
   checkpoint by validation recall (else the newest); the folder is opened read-only;
2. converted towers (`convert_weights` output, e.g. EchoPrime's released video encoder and
   BiomedBERT text encoder) with a tokenizer directory;
3. neither: randomly initialised towers, with a warning (only useful for smoke tests).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from typing import Any

import jax
import ml_collections
from flax import nnx

from echoprime_jax import parallel
from echoprime_jax.data import tokenizer
from echoprime_jax.train import optimizer, pretrain
from echoprime_jax.train.checkpoint import Checkpointer

log = logging.getLogger("echoprime_jax.train")


@dataclasses.dataclass
class FrozenTowers:
  model: Any  # two_tower.TwoTower in evaluation mode
  encoder: tokenizer.ReportEncoder
  clip_length: int
  clip_stride: int
  frame_size: int
  source: dict[str, Any]  # where the weights came from (part of the embedding fingerprint)


def run_config(run_dir: str, stage: str) -> ml_collections.ConfigDict:
  """The config.json of a finished run folder of `stage` (pretrain, views, mil)."""
  path = os.path.join(run_dir, "config.json")
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{run_dir}: no config.json; expected the --workdir of a "
                            f"configs/{stage}.py run")
  with open(path) as f:
    cfg = ml_collections.ConfigDict(json.load(f))
  if cfg.get("stage") != stage:
    raise ValueError(f"{path}: stage {cfg.get('stage')!r}, expected {stage!r}")
  return cfg


def pretrain_config(run_dir: str) -> ml_collections.ConfigDict:
  return run_config(run_dir, "pretrain")


def restore_best(run_dir: str, cfg: Any, make_state, mesh) -> tuple[int, dict]:
  """(step, state) of another run, replicated on `mesh`: its best kept step by
  cfg.best_metric, else the newest. `make_state()` builds the run's state structure (it is
  only traced). The folder is opened read-only."""
  abstract = jax.eval_shape(make_state)
  rep = parallel.replicated(mesh)
  target = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=rep), abstract)
  ckpt = Checkpointer(os.path.join(run_dir, "checkpoints"), best_metric=cfg.best_metric or None,
                      read_only=True)
  try:
    step = ckpt.best_step() or ckpt.latest_step()
    if step is None:
      raise FileNotFoundError(f"{run_dir}/checkpoints: no checkpoint to restore")
    return ckpt.restore(target, step=step)
  finally:
    ckpt.close()


def from_pretrain_run(run_dir: str, section_len: int, mesh, dtype: str = "float32"
                      ) -> FrozenTowers:
  """Towers of a pretraining run: the best kept step by its best_metric, else the newest."""
  pcfg = pretrain_config(run_dir)
  tok = tokenizer.tokenizer_for_run(run_dir, pcfg.data.tokenizer or None, [])
  with pcfg.unlocked():
    pcfg.dtype = dtype
  mcfg = pretrain.model_config(pcfg, vocab_size=len(tok))
  abstract_params = nnx.state(nnx.eval_shape(lambda: pretrain.create_model(mcfg, 0)), nnx.Param)
  tx, _ = optimizer.make_optimizer(pcfg.optim, abstract_params, 1)
  step, state = restore_best(run_dir, pcfg, lambda: pretrain.init_state(mcfg, tx, pcfg.seed),
                             mesh)
  graphdef = nnx.split(nnx.eval_shape(lambda: pretrain.create_model(mcfg, 0)), nnx.Param, ...)[0]
  model = nnx.merge(graphdef, state["params"], state["rest"])
  model.eval()
  log.info("frozen towers from %s, step %d", run_dir, step)
  return FrozenTowers(model, tokenizer.ReportEncoder(tok, pcfg.data.max_text_len, section_len),
                      pcfg.data.clip_length, pcfg.data.clip_stride,
                      pcfg.towers.video.image_size,
                      {"run": os.path.abspath(run_dir), "step": int(step)})


def from_config(cfg: Any, mesh, workdir: str, texts: list[str]) -> FrozenTowers:
  """Towers from cfg.towers (+ converted weights in cfg.init.video / .text) and the tokenizer
  cfg.data.tokenizer (or one trained on `texts` and saved in workdir/tokenizer)."""
  del mesh
  tok = tokenizer.tokenizer_for_run(workdir, cfg.data.tokenizer or None, texts,
                                    cfg.data.get("vocab_size", 8000))
  pseudo = ml_collections.ConfigDict({"towers": cfg.towers.to_dict(), "dtype": cfg.dtype,
                                      "data": {"clip_length": cfg.data.clip_length,
                                               "max_text_len": cfg.towers.text.max_length},
                                      "dropout": 0.0})
  mcfg = pretrain.model_config(pseudo, vocab_size=len(tok))
  model = pretrain.create_model(mcfg, cfg.seed)
  if cfg.init.video or cfg.init.text:
    from echoprime_jax.train import loop
    params = loop.load_towers(cfg, nnx.state(model, nnx.Param))
    nnx.update(model, params)
  else:
    log.warning("no towers_from and no init: the video and text towers are RANDOM; their "
                "embeddings mean nothing (fine for a smoke test, not for a model)")
  model.eval()
  return FrozenTowers(model, tokenizer.ReportEncoder(tok, cfg.towers.text.max_length,
                                                     cfg.data.section_len),
                      cfg.data.clip_length, cfg.data.clip_stride, cfg.towers.video.image_size,
                      {"init": dict(cfg.init), "towers": cfg.towers.to_dict(), "seed": cfg.seed})


def from_mil_run(run_dir: str, mesh) -> FrozenTowers:
  """The towers a MIL run embedded with: its towers_from pretraining run, else its converted
  weights (cfg.init) and the tokenizer saved in the run folder."""
  cfg = run_config(run_dir, "mil")
  if cfg.towers_from:
    return from_pretrain_run(cfg.towers_from, cfg.data.section_len, mesh, cfg.dtype)
  return from_config(cfg, mesh, run_dir, [])
