"""The frozen video and text towers a later stage (MIL, export, retrieval, interpret) embeds with.

Three sources, in order of preference:
1. a pretraining run folder (`configs/pretrain.py` output): `load_run` rebuilds the towers from
   its config, reads its tokenizer and its best kept checkpoint's parameters;
2. converted towers (`convert_weights` output, e.g. EchoPrime's released video encoder and
   BiomedBERT text encoder) with a tokenizer directory;
3. neither: randomly initialised towers, with a warning (only useful for smoke tests).
The clip (frames, stride, size) and the report window are the towers config's (`towers`).
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import jax.numpy as jnp
from flax import nnx

from echoprime_jax.data import tokenizer
from echoprime_jax.inference.load import load_run
from echoprime_jax.models import from_config as model_configs
from echoprime_jax.models import two_tower
from echoprime_jax.run.folder import RunFolder

log = logging.getLogger("echoprime_jax.inference")


@dataclasses.dataclass
class FrozenTowers:
  model: Any  # two_tower.TwoTower in evaluation mode
  encoder: tokenizer.ReportEncoder
  towers: Any  # the configs/towers.py node the model was built from
  source: dict[str, Any]  # where the weights came from (part of the embedding fingerprint)

  @property
  def clip_length(self) -> int:
    return int(self.towers.video.num_frames)

  @property
  def clip_stride(self) -> int:
    return int(self.towers.video.clip_stride)

  @property
  def frame_size(self) -> int:
    return int(self.towers.video.image_size)


def from_pretrain_run(run_dir: str, section_len: int, mesh, dtype: str = "float32"
                      ) -> FrozenTowers:
  """Towers of a pretraining run: its best kept step by its best_metric, else the newest."""
  run = load_run(run_dir, mesh, stage="pretrain", dtype=dtype)
  towers = run.config.towers
  encoder = tokenizer.ReportEncoder(run.tokenizer, towers.text.max_length, section_len)
  return FrozenTowers(run.model, encoder, towers, run.source)


def load_converted(params, path: str, what: str):
  """`params` (an nnx.Param state) overwritten by a converted tower folder (convert_weights
  output) of the same structure; dtypes kept."""
  import jax

  from echoprime_jax.weights import tower_folder
  loaded = nnx.state(tower_folder.load_tower(path), nnx.Param)
  log.info("initialised the %s from %s", what, path)
  return jax.tree.map(lambda new, old: jnp.asarray(new, old.dtype), loaded, params)


def load_converted_towers(init: Any, params):
  """The two-tower `params` with the video / text towers of init.video / init.text (converted
  checkpoint folders; "" keeps that tower)."""
  for name in ("video", "text"):
    path = init.get(name, "")
    if path:
      params[name] = load_converted(params[name], path, f"{name} tower")
  return params


def from_stage_config(cfg: Any, workdir: str, texts: list[str]) -> FrozenTowers:
  """Towers from cfg.towers (+ converted weights in cfg.init.video / .text) and the tokenizer
  cfg.data.tokenizer (or one trained on `texts` and saved in workdir/tokenizer)."""
  tok = tokenizer.tokenizer_for_run(RunFolder(workdir).tokenizer, cfg.data.tokenizer or None,
                                    texts, cfg.data.get("vocab_size", 8000))
  mcfg = model_configs.two_tower_config(cfg.towers, cfg.dtype, len(tok), dropout=0.0)
  model = two_tower.TwoTower(mcfg, rngs=nnx.Rngs(cfg.seed))
  if cfg.init.video or cfg.init.text:
    nnx.update(model, load_converted_towers(cfg.init, nnx.state(model, nnx.Param)))
  else:
    log.warning("no towers_from and no init: the video and text towers are RANDOM; their "
                "embeddings mean nothing (fine for a smoke test, not for a model)")
  model.eval()
  encoder = tokenizer.ReportEncoder(tok, cfg.towers.text.max_length, cfg.data.section_len)
  return FrozenTowers(model, encoder, cfg.towers,
                      {"init": dict(cfg.init), "towers": cfg.towers.to_dict(), "seed": cfg.seed})


def for_mil_run(run, mesh) -> FrozenTowers:
  """The towers a loaded MIL run (`load_run`) embedded with: its towers_from pretraining run,
  else its converted weights (cfg.init) and the tokenizer saved in the run folder."""
  cfg = run.config
  if cfg.towers_from:
    return from_pretrain_run(cfg.towers_from, cfg.data.section_len, mesh, cfg.dtype)
  return from_stage_config(cfg, run.folder.root, [])

