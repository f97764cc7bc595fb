"""From a `configs/towers.py` ConfigDict to the three model configs (one place, shared)."""

from __future__ import annotations

from typing import Any

from echoprime_jax.models import bert, convnext, mvit, text_encoder

_VIDEO = {"mvit_v2_s": mvit.mvit_v2_s, "mvit_tiny": mvit.mvit_tiny}
_TEXT = {"bert_base": bert.BertConfig, "bert_tiny": bert.bert_tiny}


def video_config(c: Any, dtype: str = "float32") -> mvit.MViTConfig:
  size = c.image_size
  return _VIDEO[c.arch](num_frames=c.num_frames, image_size=(size, size),
                        num_outputs=c.num_outputs, dtype=dtype)


def text_config(c: Any, dtype: str = "float32") -> text_encoder.TextEncoderConfig:
  bcfg = _TEXT[c.arch]().replace(vocab_size=c.vocab_size, dtype=dtype,
                                 initializer_range=c.initializer_range)
  if c.max_length > bcfg.max_position_embeddings:
    raise ValueError(f"text.max_length {c.max_length} exceeds the BERT's "
                     f"{bcfg.max_position_embeddings} positions")
  return text_encoder.TextEncoderConfig(bert=bcfg, out_dim=c.out_dim)


def views_config(c: Any, dtype: str = "float32") -> convnext.ConvNeXtConfig:
  return convnext.convnext(c.arch, num_classes=c.num_classes, dtype=dtype)
