"""Model configs from the stage ConfigDicts (configs/*.py), the one place that maps one to the
other: training and inference build the same model from the same run config.

Takes plain values and duck-typed config nodes only (no files, no taxonomy tables): the label
space's size and the number of views come in as arguments.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from echoprime_jax.models import bert, convnext, mil, mvit, text_encoder, two_tower

_VIDEO = {"mvit_v2_s": mvit.mvit_v2_s, "mvit_tiny": mvit.mvit_tiny}
_TEXT = {"bert_base": bert.BertConfig, "bert_tiny": bert.bert_tiny}


def video_config(towers: Any, dtype: str = "float32") -> mvit.MViTConfig:
  """configs/towers.py -> the video tower: clips of video.num_frames frames of
  video.image_size^2 -> embed_dim."""
  v = towers.video
  return _VIDEO[v.arch](num_frames=v.num_frames, image_size=(v.image_size, v.image_size),
                        num_outputs=towers.embed_dim, dtype=dtype)


def text_config(towers: Any, dtype: str = "float32", vocab_size: int | None = None
                ) -> text_encoder.TextEncoderConfig:
  """configs/towers.py -> the text tower: text.max_length tokens -> embed_dim; vocab_size
  (the tokenizer's) replaces text.vocab_size when given."""
  t = towers.text
  bcfg = _TEXT[t.arch]().replace(vocab_size=vocab_size or t.vocab_size, dtype=dtype,
                                 initializer_range=t.initializer_range)
  if t.get("attention_dropout", -1.0) >= 0:  # -1 / absent: the BERT's own
    bcfg = bcfg.replace(attention_probs_dropout_prob=t.attention_dropout)
  if t.max_length > bcfg.max_position_embeddings:
    raise ValueError(f"towers.text.max_length {t.max_length} exceeds the BERT's "
                     f"{bcfg.max_position_embeddings} positions")
  return text_encoder.TextEncoderConfig(bert=bcfg, out_dim=towers.embed_dim)


def two_tower_config(towers: Any, dtype: str, vocab_size: int, dropout: float = -1.0,
                     remat: str | None = None) -> two_tower.TwoTowerConfig:
  """The video-report model of a pretraining (or MIL) config. dropout >= 0 sets every
  stochastic regulariser of both towers (dropout, stochastic depth); -1 keeps their defaults.
  remat="blocks": every MViT block and BERT layer recomputes its activations in the backward
  pass (None: all kept)."""
  if remat not in (None, "blocks"):
    raise ValueError(f"remat must be 'blocks' or unset, got {remat!r}")
  video = video_config(towers, dtype).replace(remat=remat == "blocks")
  text = text_config(towers, dtype, vocab_size)
  text = dataclasses.replace(text, bert=text.bert.replace(remat=remat == "blocks"))
  if dropout >= 0:
    video = video.replace(stochastic_depth=dropout, head_dropout=dropout)
    text = dataclasses.replace(text, bert=text.bert.replace(
        hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout))
  return two_tower.TwoTowerConfig(video=video, text=text)


def view_classifier_config(cfg: Any, num_classes: int) -> convnext.ConvNeXtConfig:
  """configs/views.py -> the ConvNeXt classifier over `num_classes` views."""
  mcfg = convnext.convnext(cfg.arch, num_classes=num_classes, dtype=cfg.dtype)
  if cfg.get("dropout", -1.0) >= 0:
    mcfg = mcfg.replace(stochastic_depth=cfg.dropout)
  return mcfg


def mil_config(cfg: Any, num_sections: int, num_views: int) -> mil.MILConfig:
  """configs/mil.py -> the section aggregator over the towers' embed_dim-d video embeddings
  ++ a num_views one-hot (EchoPrime's 512 + 11 layout)."""
  dim = cfg.towers.embed_dim
  return mil.MILConfig(num_sections=num_sections, feature_dim=dim + num_views, embed_dim=dim,
                       hidden_dim=cfg.mil.hidden_dim, out_dim=dim,
                       init_temperature=cfg.mil.init_temperature,
                       attention=cfg.mil.get("attention", "gated"))
