"""torchvision ConvNeXt state dicts (incl. EchoPrime's 11-view classifier) -> Flax `ConvNeXt`."""

from __future__ import annotations

import re
from typing import Any, Mapping

import numpy as np
from flax import nnx

from echoprime_jax.models import convnext
from echoprime_jax.weights import mapping

_BLOCK_PARTS = {"dwconv": "block.0", "norm": "block.2", "pw1": "block.3", "pw2": "block.5"}


def _torch_name(path: mapping.Path) -> str:
  name = mapping.dotted(path)
  fixed = {"stem_conv.": "features.0.0.", "stem_norm.": "features.0.1.",
           "head_norm.": "classifier.0.", "head.": "classifier.2."}
  for ours, theirs in fixed.items():
    if name.startswith(ours):
      return theirs + name[len(ours):]
  if m := re.match(r"stages\.(\d+)\.blocks\.(\d+)\.(\w+)(\.\w+)?$", name):
    stage, block, part, leaf = int(m.group(1)), m.group(2), m.group(3), m.group(4) or ""
    if part == "layer_scale":
      return f"features.{2 * stage + 1}.{block}.layer_scale"
    return f"features.{2 * stage + 1}.{block}.{_BLOCK_PARTS[part]}{leaf}"
  if m := re.match(r"stages\.(\d+)\.down_(norm|conv)\.(\w+)$", name):
    return f"features.{2 * int(m.group(1))}.{0 if m.group(2) == 'norm' else 1}.{m.group(3)}"
  return name


CONVNEXT_KEYS = mapping.KeyMapping(_torch_name)


def _reshape(path: mapping.Path, array: np.ndarray) -> np.ndarray:
  if path[-1] == "layer_scale":  # torch stores (C, 1, 1) for NCHW broadcasting
    return array.reshape(-1)
  return array


def config_from_state_dict(state_dict: Mapping[str, Any], **overrides) -> convnext.ConvNeXtConfig:
  """Infers depths, widths and the head size from a torchvision ConvNeXt state dict."""
  depths, dims = [], []
  for stage in range(4):
    idx = {int(m.group(1)) for k in state_dict
           if (m := re.match(rf"features\.{2 * stage + 1}\.(\d+)\.layer_scale$", k))}
    if not idx:
      break
    depths.append(len(idx))
    dims.append(int(np.shape(state_dict[f"features.{2 * stage + 1}.0.layer_scale"])[0]))
  if not depths:
    raise mapping.WeightImportError("ConvNeXt checkpoint", ["features.1.0.layer_scale"], [], [])
  # a head saved as a bare Linear still sizes the model's (WeightImportError's hint names both)
  head = state_dict.get("classifier.2.weight", state_dict.get("classifier.weight"))
  # torchvision's stochastic-depth rate for a known variant (only matters when fine-tuning)
  rate = next((sd for d, w, sd in convnext.VARIANTS.values()
               if d == tuple(depths) and w == tuple(dims)), 0.1)
  kw = dict(depths=tuple(depths), dims=tuple(dims), stochastic_depth=rate,
            num_classes=int(np.shape(head)[0]) if head is not None else 0)
  kw.update(overrides)
  return convnext.ConvNeXtConfig(**kw)


def load_convnext(state_dict: Mapping[str, Any], cfg: convnext.ConvNeXtConfig | None = None,
                  source: str = "ConvNeXt checkpoint", seed: int = 0) -> convnext.ConvNeXt:
  cfg = cfg or config_from_state_dict(state_dict)
  model = nnx.eval_shape(lambda: convnext.ConvNeXt(cfg, rngs=nnx.Rngs(seed)))
  flat = mapping.torch_to_flax(mapping.abstract_params(model), state_dict, CONVNEXT_KEYS, source,
                               reshape=_reshape)
  return mapping.materialize(model, flat, seed)
