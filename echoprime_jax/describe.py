"""Print the towers of a configuration: parameter counts and input -> output shapes.

  python -m echoprime_jax.describe                              # EchoPrime shapes
  python -m echoprime_jax.describe --config configs/towers.py:tiny
  python -m echoprime_jax.describe --tower towers/video         # a converted checkpoint

The video and text towers come from the towers config; the view classifier from
configs/views.py's variant of the same name (its sizes live there). Shapes come from
`jax.eval_shape`: nothing is computed or allocated, so the full-size towers are described in
seconds on any machine.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
from absl import app, flags
from flax import nnx
from ml_collections import config_flags

from echoprime_jax.models import convnext, from_config, layers, mvit, text_encoder
from echoprime_jax.weights import tower_folder

_CONFIG = config_flags.DEFINE_config_file(
    "config", os.path.join(os.path.dirname(__file__), "..", "configs", "towers.py:echoprime"),
    "Towers config file and variant, e.g. configs/towers.py:tiny; override fields with "
    "--config.video.num_frames=32 etc.")
_TOWER = flags.DEFINE_multi_string(
    "tower", [], "Describe a converted tower checkpoint directory instead (repeatable).")


def describe_model(name: str, model_fn, inputs: dict[str, jax.ShapeDtypeStruct]) -> str:
  """One table row: name, parameters, input shapes -> output shape (all abstract)."""
  model = nnx.eval_shape(model_fn)
  model.eval()
  graphdef, state = nnx.split(model)
  out = jax.eval_shape(lambda st, kw: nnx.merge(graphdef, st)(**kw), state, inputs)
  ins = ", ".join(f"{k} {tuple(v.shape)} {v.dtype}" for k, v in inputs.items())
  return f"{name:<8} {layers.param_count(model):>13,}  {ins} -> {tuple(out.shape)} {out.dtype}"


def _inputs_for(cfg, batch: int, text_length: int = 512) -> dict[str, jax.ShapeDtypeStruct]:
  if isinstance(cfg, mvit.MViTConfig):
    return {"video": jax.ShapeDtypeStruct((batch, cfg.num_frames, *cfg.image_size, 3),
                                          jnp.float32)}
  if isinstance(cfg, text_encoder.TextEncoderConfig):
    ids = jax.ShapeDtypeStruct((batch, text_length), jnp.int32)
    return {"input_ids": ids, "attention_mask": ids}
  if isinstance(cfg, convnext.ConvNeXtConfig):
    return {"images": jax.ShapeDtypeStruct((batch, 224, 224, 3), jnp.float32)}
  raise TypeError(type(cfg))


def main(argv):
  del argv
  from echoprime_jax.runtime import cli
  return cli.run(_describe)  # a missing or foreign tower folder: one line, exit 2


def _describe() -> None:
  rows = []
  if _TOWER.value:
    for directory in _TOWER.value:
      meta = tower_folder.read_tower_meta(directory)
      cfg = tower_folder.tower_config(directory)
      _, cls = tower_folder.TOWERS[meta["kind"]]
      length = getattr(getattr(cfg, "bert", None), "max_position_embeddings", 512)
      rows.append(describe_model(meta["kind"], lambda: cls(cfg, rngs=nnx.Rngs(0)),
                                 _inputs_for(cfg, 1, length)))
  else:
    c = _CONFIG.value
    b = c.batch_size
    vcfg = from_config.video_config(c, c.dtype)
    tcfg = from_config.text_config(c, c.dtype)
    from configs import views as views_config  # the view classifier's sizes live there
    vc = views_config.get_config("tiny" if c.variant == "tiny" else "echoprime")
    with vc.unlocked():
      vc.dtype = c.dtype
    ccfg = from_config.view_classifier_config(vc, 11)
    rows.append(describe_model("video", lambda: mvit.MViT(vcfg, rngs=nnx.Rngs(0)),
                               _inputs_for(vcfg, b)))
    rows.append(describe_model("text", lambda: text_encoder.TextEncoder(tcfg, rngs=nnx.Rngs(0)),
                               _inputs_for(tcfg, b, c.text.max_length)))
    size = vc.image_size
    rows.append(describe_model(
        "views", lambda: convnext.ConvNeXt(ccfg, rngs=nnx.Rngs(0)),
        {"images": jax.ShapeDtypeStruct((b, size, size, 3), jnp.float32)}))
    print(f"towers config: {c.variant} (compute dtype {c.dtype})")
  print(f"{'tower':<8} {'parameters':>13}  inputs -> output")
  for row in rows:
    print(row)


if __name__ == "__main__":
  from echoprime_jax.runtime import cli as _cli
  app.run(main, flags_parser=_cli.absl_flags_parser("config"))
