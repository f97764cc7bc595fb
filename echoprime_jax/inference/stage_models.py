"""The model each stage trains, built from its config: the one definition that training
(`train/stages/*`) and loading a run (`inference.load_run`) share.

  pretrain  two_tower.TwoTower over cfg.towers, its text vocabulary the run's tokenizer's
  views     convnext.ConvNeXt over the views of cfg.taxonomy
  mil       mil.GatedAttentionMIL over cfg.towers.embed_dim-d videos ++ the 11 coarse views
"""

from __future__ import annotations

from typing import Any

from flax import nnx

from data_prep import views as views_lib
from echoprime_jax.inference import attention_table
from echoprime_jax.models import convnext, from_config, mil, two_tower


def model_config(stage: str, cfg: Any, *, vocab_size: int | None = None,
                 dtype: str | None = None):
  """The dataclass config of `stage`'s model (vocab_size: the tokenizer's, for pretrain)."""
  dtype = dtype or cfg.dtype
  if stage == "pretrain":
    if vocab_size is None:
      raise ValueError("the pretraining model needs its tokenizer's vocab_size")
    return from_config.two_tower_config(cfg.towers, dtype, vocab_size, cfg.get("dropout", -1.0),
                                        cfg.get("remat"))
  if stage == "views":
    return from_config.view_classifier_config(cfg, len(views_lib.taxonomy(cfg.taxonomy)))
  if stage == "mil":
    return from_config.mil_config(cfg, len(attention_table.TABLE_SECTIONS),
                                  len(views_lib.COARSE_VIEWS))
  raise ValueError(f"unknown stage {stage!r}; stages: pretrain, views, mil")


def create_model(stage: str, mcfg, seed: int) -> nnx.Module:
  """A freshly initialised model of `stage` from its `model_config`."""
  cls = {"pretrain": two_tower.TwoTower, "views": convnext.ConvNeXt,
         "mil": mil.GatedAttentionMIL}[stage]
  return cls(mcfg, rngs=nnx.Rngs(seed))
