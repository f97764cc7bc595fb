"""torchvision MViT state dicts (incl. EchoPrime's released video encoder) -> Flax `MViT`."""

from __future__ import annotations

import re
from typing import Any, Mapping

import numpy as np
from flax import nnx

from echoprime_jax.models import mvit
from echoprime_jax.weights import mapping

MVIT_KEYS = mapping.KeyMapping(
    torch_name=mapping.regex_renamer([
        (r"^class_token$", "pos_encoding.class_token"),
        (r"^(spatial_pos|temporal_pos|class_pos)$", r"pos_encoding.\1"),
        (r"^(blocks\.\d+\.attn)\.proj\.", r"\1.project.0."),
        (r"^(blocks\.\d+\.attn\.pool_[qkv])\.conv\.", r"\1.pool."),
        (r"^(blocks\.\d+\.attn\.pool_[qkv])\.norm\.", r"\1.norm_act.0."),
        (r"^(blocks\.\d+)\.mlp_in\.", r"\1.mlp.0."),
        (r"^(blocks\.\d+)\.mlp_out\.", r"\1.mlp.3."),
        (r"^head\.", "head.1."),
    ]))


def config_from_state_dict(state_dict: Mapping[str, Any], **overrides) -> mvit.MViTConfig:
  """Infers an `mvit_v2_s`-layout config from a state dict (head size; blocks counted)."""
  n_blocks = len({int(m.group(1)) for k in state_dict
                  if (m := re.match(r"blocks\.(\d+)\.", k))})
  base = mvit.mvit_v2_s()
  if n_blocks != len(base.blocks):
    raise mapping.WeightImportError(
        "MViT checkpoint", [], [],
        [f"the file has {n_blocks} blocks; mvit_v2_s has {len(base.blocks)} "
         "(pass an explicit MViTConfig for other layouts)"])
  # a head saved as a bare Linear (head.weight) still sizes the model's: the conversion then
  # names both spellings (WeightImportError's hint)
  head = state_dict.get("head.1.weight", state_dict.get("head.weight"))
  num_outputs = int(np.shape(head)[0]) if head is not None else 0
  return base.replace(num_outputs=num_outputs, **overrides)


def load_mvit(state_dict: Mapping[str, Any], cfg: mvit.MViTConfig | None = None,
              source: str = "MViT checkpoint", seed: int = 0) -> mvit.MViT:
  """Builds a Flax MViT holding the weights of a torchvision-format state dict."""
  cfg = cfg or config_from_state_dict(state_dict)
  model = nnx.eval_shape(lambda: mvit.MViT(cfg, rngs=nnx.Rngs(seed)))
  flat = mapping.torch_to_flax(mapping.abstract_params(model), state_dict, MVIT_KEYS, source)
  return mapping.materialize(model, flat, seed)
