"""Orbax checkpoints of single towers: what `convert_weights` writes and later stages load.

Layout of a tower directory:
  tower.json   {"kind": "mvit" | "text_encoder" | "bert" | "convnext", "config": {...},
                "source": "<file it was converted from>", "format": 1}
  params/      an Orbax `StandardCheckpointer` checkpoint of the `nnx.Param` pure dict.

`load_tower` rebuilds the model from `tower.json` (config overrides such as a bf16 compute
`dtype` are allowed) and restores the parameters without random initialisation, in evaluation
mode (no dropout, no stochastic depth): training code that wants train mode says so
(`model.train()`).
"""

from __future__ import annotations

import json
import os
from typing import Any, Callable

import jax
import orbax.checkpoint as ocp
from flax import nnx, traverse_util

from echoprime_jax.models import bert, convnext, mvit, text_encoder
from echoprime_jax.weights import mapping

FORMAT = 1

# kind -> (config class, model class)
TOWERS: dict[str, tuple[Any, Callable[..., nnx.Module]]] = {
    "mvit": (mvit.MViTConfig, mvit.MViT),
    "text_encoder": (text_encoder.TextEncoderConfig, text_encoder.TextEncoder),
    "bert": (bert.BertConfig, bert.Bert),
    "convnext": (convnext.ConvNeXtConfig, convnext.ConvNeXt),
}


def kind_of(model: nnx.Module) -> str:
  for kind, (_, cls) in TOWERS.items():
    if type(model) is cls:
      return kind
  raise TypeError(f"not a known tower: {type(model).__name__}")


def save_tower(directory: str, model: nnx.Module, source: str = "") -> str:
  """Writes `model` (config + parameters) to `directory`, which must not exist yet."""
  directory = os.path.abspath(directory)
  if os.path.exists(os.path.join(directory, "params")):
    raise FileExistsError(f"{directory}: already holds a checkpoint; choose a new directory")
  os.makedirs(directory, exist_ok=True)
  params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
  checkpointer = ocp.StandardCheckpointer()
  checkpointer.save(os.path.join(directory, "params"), params)
  checkpointer.wait_until_finished()
  meta = {"kind": kind_of(model), "config": model.config.to_dict(),
          "source": os.path.basename(source), "format": FORMAT}
  with open(os.path.join(directory, "tower.json"), "w") as f:
    json.dump(meta, f, indent=2)
  return directory


def read_tower_meta(directory: str) -> dict[str, Any]:
  path = os.path.join(directory, "tower.json")
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{directory}: not a tower checkpoint (no tower.json); create one "
                            "with `python -m echoprime_jax.convert_weights`")
  with open(path) as f:
    meta = json.load(f)
  if meta.get("kind") not in TOWERS:
    raise ValueError(f"{path}: unknown tower kind {meta.get('kind')!r}")
  return meta


def tower_config(directory: str, **overrides) -> Any:
  """The config stored with a tower, with `overrides` (e.g. dtype="bfloat16") applied."""
  meta = read_tower_meta(directory)
  cfg_cls, _ = TOWERS[meta["kind"]]
  cfg = cfg_cls.from_dict(meta["config"])
  if overrides:
    if meta["kind"] == "text_encoder":
      cfg = text_encoder.TextEncoderConfig(bert=cfg.bert.replace(**overrides), out_dim=cfg.out_dim)
    else:
      cfg = cfg.replace(**overrides)
  return cfg


def load_tower(directory: str, seed: int = 0, **overrides) -> nnx.Module:
  """Restores a tower saved by `save_tower` (config `overrides` such as dtype allowed), in
  evaluation mode."""
  directory = os.path.abspath(directory)
  meta = read_tower_meta(directory)
  cfg = tower_config(directory, **overrides)
  _, model_cls = TOWERS[meta["kind"]]
  abstract = nnx.eval_shape(lambda: model_cls(cfg, rngs=nnx.Rngs(seed)))
  target = nnx.to_pure_dict(nnx.state(abstract, nnx.Param))
  target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), target)
  restored = ocp.StandardCheckpointer().restore(os.path.join(directory, "params"), target)
  model = mapping.materialize(abstract, traverse_util.flatten_dict(restored), seed)
  model.eval()
  return model
