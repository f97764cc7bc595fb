"""EchoPrime's text tower: BERT -> last hidden state at token 0 ([CLS]) -> Linear(768 -> 512).

`input_ids, attention_mask: (B, S)` -> `(B, out_dim)`; no L2 normalisation inside (the
contrastive loss normalises), matching EchoPrime's released text encoder.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import jax
from flax import nnx

from echoprime_jax.models import bert, layers


@dataclasses.dataclass(frozen=True)
class TextEncoderConfig:
  bert: bert.BertConfig = bert.BertConfig()
  out_dim: int = 512

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)

  @classmethod
  def from_dict(cls, d: Mapping[str, Any]) -> "TextEncoderConfig":
    return cls(bert=bert.BertConfig.from_dict(d["bert"]), out_dim=d["out_dim"])


class TextEncoder(nnx.Module):
  """BERT + projection of the [CLS] token."""

  def __init__(self, cfg: TextEncoderConfig, *, rngs: nnx.Rngs):
    self.config = cfg
    self.bert = bert.Bert(cfg.bert, rngs=rngs)
    self.text_projection = layers.linear(cfg.bert.hidden_size, cfg.out_dim, dtype=cfg.bert.dtype,
                                         param_dtype=cfg.bert.param_dtype, rngs=rngs)

  def __call__(self, input_ids: jax.Array, attention_mask: jax.Array | None = None,
               token_type_ids: jax.Array | None = None) -> jax.Array:
    """input_ids, attention_mask: (B, S) -> (B, out_dim) report embedding (not normalised)."""
    hidden = self.bert(input_ids, attention_mask, token_type_ids)
    return self.text_projection(hidden[:, 0])
