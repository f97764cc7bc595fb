"""The frozen video and text towers a later stage (MIL, export, retrieval, interpret) embeds with.

Sources: an imported EchoPrime release (`from_release`, for export and probe), or, in order of
preference:
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


def from_release(root: str, tokenizer_dir: str, section_len: int, mesh,
                 dtype: str = "float32") -> FrozenTowers:
  """The video and text towers of an imported EchoPrime release (`release import`), with the
  tokenizer in `tokenizer_dir` (BiomedBERT's vocab.txt: the release ships none). Clips are the
  release's (16 frames at stride 2, 224 px); reports up to 512 tokens."""
  import ml_collections

  from echoprime_jax.release import layout
  from echoprime_jax.weights import tower_folder
  if not tokenizer_dir:
    raise ValueError(f"{root}: EchoPrime's release has no tokenizer: pass --tokenizer with "
                     "BiomedBERT's tokenizer folder (vocab.txt), the one its text tower reads")
  video = tower_folder.tower_config(layout.tower_dir(root, "video"), dtype=dtype)
  text = tower_folder.tower_config(layout.tower_dir(root, "text"), dtype=dtype)
  tok = tokenizer.load_tokenizer(tokenizer_dir)
  if len(tok) > text.bert.vocab_size:
    raise ValueError(f"{tokenizer_dir}: {len(tok)} tokens, the release's text tower has "
                     f"{text.bert.vocab_size}: not the tokenizer it was trained with")
  model = two_tower.TwoTower(two_tower.TwoTowerConfig(video=video, text=text),
                             rngs=nnx.Rngs(0))
  params = nnx.state(model, nnx.Param)
  for name in ("video", "text"):
    params[name] = load_converted(params[name], layout.tower_dir(root, name), f"{name} tower")
  nnx.update(model, params)
  model.eval()
  towers = ml_collections.ConfigDict(dict(
      embed_dim=video.num_outputs,
      video=dict(arch="mvit_v2_s", num_frames=16, clip_stride=2, image_size=video.image_size[0]),
      text=dict(max_length=min(512, text.bert.max_position_embeddings))))
  encoder = tokenizer.ReportEncoder(tok, towers.text.max_length, section_len)
  return FrozenTowers(model, encoder, towers, {"release": root, "tokenizer": tokenizer_dir})


def load(path: str, section_len: int, mesh, tokenizer_dir: str = "",
         dtype: str = "float32") -> FrozenTowers:
  """A pretraining run folder's towers, or an imported EchoPrime release's."""
  from echoprime_jax.release import layout
  from echoprime_jax.run import output_folder
  if output_folder.kind_of(path) == layout.OUTPUT_KIND:
    return from_release(path, tokenizer_dir, section_len, mesh, dtype)
  return from_pretrain_run(path, section_len, mesh, dtype)


def for_mil_run(run, mesh) -> FrozenTowers:
  """The towers a loaded MIL run (`load_run`) embedded with: its towers_from pretraining run,
  else its converted weights (cfg.init) and the tokenizer saved in the run folder."""
  cfg = run.config
  if cfg.towers_from:
    return from_pretrain_run(cfg.towers_from, cfg.data.section_len, mesh, cfg.dtype)
  return from_stage_config(cfg, run.folder.root, [])

