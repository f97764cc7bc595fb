"""Hugging Face BERT checkpoints and EchoPrime's text-encoder file -> Flax `Bert` / `TextEncoder`.

Accepted key layouts (detected, not configured):
* `BertModel`: `embeddings.*`, `encoder.layer.N.*` (+ `pooler.*`, ignored);
* `BertForMaskedLM` / `BertForPreTraining` (a HF checkpoint directory such as BiomedBERT's):
  the same under `bert.`, plus `cls.*` heads (ignored);
* EchoPrime's text encoder: `backbone.bert.*`, `backbone.cls.*` (ignored), `text_projection.*`.
Legacy TF-converted names (`LayerNorm.gamma` / `.beta`) are accepted.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any, Mapping

import numpy as np
from flax import nnx

from echoprime_jax.models import bert, text_encoder
from echoprime_jax.weights import mapping, state_dict_io

_BERT_RULES = [
    (r"^embeddings\.word\.", "embeddings.word_embeddings."),
    (r"^embeddings\.position\.", "embeddings.position_embeddings."),
    (r"^embeddings\.token_type\.", "embeddings.token_type_embeddings."),
    (r"^embeddings\.norm\.", "embeddings.LayerNorm."),
    (r"^layers\.(\d+)\.(query|key|value)\.", r"encoder.layer.\1.attention.self.\2."),
    (r"^layers\.(\d+)\.attn_out\.", r"encoder.layer.\1.attention.output.dense."),
    (r"^layers\.(\d+)\.attn_norm\.", r"encoder.layer.\1.attention.output.LayerNorm."),
    (r"^layers\.(\d+)\.mlp_in\.", r"encoder.layer.\1.intermediate.dense."),
    (r"^layers\.(\d+)\.mlp_out\.", r"encoder.layer.\1.output.dense."),
    (r"^layers\.(\d+)\.mlp_norm\.", r"encoder.layer.\1.output.LayerNorm."),
]
_BERT_IGNORE = (r"pooler\..*", r"embeddings\.position_ids", r"cls\..*")

BERT_KEYS = mapping.KeyMapping(mapping.regex_renamer(_BERT_RULES), _BERT_IGNORE)

# EchoPrime's file: the BERT lives under `backbone.bert.`; `bert.` is our attribute name.
TEXT_ENCODER_KEYS = mapping.KeyMapping(
    mapping.regex_renamer([(r"^bert\." + p[1:], r"backbone.bert." + r)
                           for p, r in _BERT_RULES]),
    tuple(r"backbone\." + p for p in _BERT_IGNORE))


def normalise_bert_keys(state_dict: Mapping[str, Any]) -> dict[str, Any]:
  """HF layouts -> `BertModel` keys: strips `bert.`, renames legacy gamma/beta."""
  out = {}
  prefixed = any(k.startswith("bert.") for k in state_dict)
  for k, v in state_dict.items():
    if prefixed and k.startswith("bert."):
      k = k[len("bert."):]
    k = re.sub(r"LayerNorm\.gamma$", "LayerNorm.weight", k)
    k = re.sub(r"LayerNorm\.beta$", "LayerNorm.bias", k)
    out[k] = v
  return out


def config_from_state_dict(state_dict: Mapping[str, Any], prefix: str = "",
                           **overrides) -> bert.BertConfig:
  """Infers a BERT config from tensor shapes (heads assume 64-d heads unless overridden)."""
  def shape(key):
    if prefix + key not in state_dict:
      raise mapping.WeightImportError("BERT checkpoint", [prefix + key], [], [])
    return np.shape(state_dict[prefix + key])
  vocab, hidden = shape("embeddings.word_embeddings.weight")
  layers = len({int(m.group(1)) for k in state_dict
                if (m := re.match(re.escape(prefix) + r"encoder\.layer\.(\d+)\.", k))})
  kw = dict(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers,
            num_attention_heads=max(hidden // 64, 1),
            intermediate_size=shape("encoder.layer.0.intermediate.dense.weight")[0],
            max_position_embeddings=shape("embeddings.position_embeddings.weight")[0],
            type_vocab_size=shape("embeddings.token_type_embeddings.weight")[0])
  kw.update(overrides)
  return bert.BertConfig(**kw)


def load_bert(state_dict: Mapping[str, Any], cfg: bert.BertConfig | None = None,
              source: str = "BERT checkpoint", seed: int = 0) -> bert.Bert:
  """A Flax `Bert` from any HF BERT state dict layout."""
  sd = normalise_bert_keys(state_dict)
  cfg = cfg or config_from_state_dict(sd)
  model = nnx.eval_shape(lambda: bert.Bert(cfg, rngs=nnx.Rngs(seed)))
  flat = mapping.torch_to_flax(mapping.abstract_params(model), sd, BERT_KEYS, source)
  return mapping.materialize(model, flat, seed)


def load_hf_bert_dir(path: str, dtype: str = "float32", seed: int = 0) -> bert.Bert:
  """A Flax `Bert` from a local Hugging Face checkpoint directory (config.json + weights)."""
  cfg_path = os.path.join(path, "config.json")
  if not os.path.isfile(cfg_path):
    raise FileNotFoundError(f"{path}: not a Hugging Face checkpoint directory (no config.json)")
  with open(cfg_path) as f:
    cfg = bert.BertConfig.from_hf(json.load(f), dtype=dtype)
  weights = state_dict_io.find_hf_weights(path)
  return load_bert(state_dict_io.load_state_dict(weights), cfg, source=weights, seed=seed)


def load_echoprime_text_encoder(state_dict: Mapping[str, Any],
                                cfg: text_encoder.TextEncoderConfig | None = None,
                                source: str = "EchoPrime text encoder", seed: int = 0
                                ) -> text_encoder.TextEncoder:
  """A Flax `TextEncoder` from EchoPrime's text-encoder state dict."""
  sd = {re.sub(r"LayerNorm\.gamma$", "LayerNorm.weight",
               re.sub(r"LayerNorm\.beta$", "LayerNorm.bias", k)): v
        for k, v in state_dict.items()}
  if cfg is None:
    proj = sd.get("text_projection.weight")
    if proj is None:
      raise mapping.WeightImportError(source, ["text_projection.weight"], [], [])
    cfg = text_encoder.TextEncoderConfig(
        bert=config_from_state_dict(sd, prefix="backbone.bert."), out_dim=np.shape(proj)[0])
  model = nnx.eval_shape(lambda: text_encoder.TextEncoder(cfg, rngs=nnx.Rngs(seed)))
  flat = mapping.torch_to_flax(mapping.abstract_params(model), sd, TEXT_ENCODER_KEYS, source)
  return mapping.materialize(model, flat, seed)
