"""Convert PyTorch / Hugging Face weights into Orbax tower checkpoints.

  python -m echoprime_jax.convert_weights mvit --input echo_prime_encoder.pt --output towers/video
  python -m echoprime_jax.convert_weights echoprime-text --input text_encoder.pt --output towers/text
  python -m echoprime_jax.convert_weights hf-bert --input BiomedBERT/ --output towers/text \\
      --as-text-encoder
  python -m echoprime_jax.convert_weights convnext --input view_classifier.pt --output towers/views

Every command reads the file safely (safetensors, or `torch.load(weights_only=True)`), checks
that every tensor fits the model (one error lists all missing / unexpected / mis-shaped keys),
writes `<output>/tower.json` + `<output>/params` (Orbax) and prints the parameter count.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys

from flax import nnx

from echoprime_jax.models import bert, layers, text_encoder
from echoprime_jax.run import output_folder
from echoprime_jax.runtime import cli
from echoprime_jax.weights import (bert_weights, convnext_weights, mapping,
                                   mvit_weights, state_dict_io, tower_folder)

log = logging.getLogger("convert_weights")

_TOKENIZER_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json",
                    "special_tokens_map.json")


def _convert_mvit(args) -> nnx.Module:
  sd = state_dict_io.load_state_dict(args.input, args.strip_prefix)
  return mvit_weights.load_mvit(sd, source=args.input)


def _convert_echoprime_text(args) -> nnx.Module:
  sd = state_dict_io.load_state_dict(args.input, args.strip_prefix)
  cfg = None
  if args.bert_config:
    with open(args.bert_config) as f:
      bcfg = bert.BertConfig.from_hf(json.load(f))
    proj = sd.get("text_projection.weight")
    if proj is None:
      raise mapping.WeightImportError(args.input, ["text_projection.weight"], [], [])
    cfg = text_encoder.TextEncoderConfig(bert=bcfg, out_dim=proj.shape[0])
  return bert_weights.load_echoprime_text_encoder(sd, cfg, source=args.input)


def _convert_hf_bert(args) -> nnx.Module:
  encoder = bert_weights.load_hf_bert_dir(args.input)
  if not args.as_text_encoder:
    return encoder
  # The checkpoint's BERT + a freshly initialised, seeded projection: the pretraining init.
  cfg = text_encoder.TextEncoderConfig(bert=encoder.config, out_dim=args.out_dim)
  abstract = nnx.eval_shape(lambda: text_encoder.TextEncoder(cfg, rngs=nnx.Rngs(args.seed)))
  projection = layers.linear(cfg.bert.hidden_size, cfg.out_dim, dtype=cfg.bert.dtype,
                             param_dtype=cfg.bert.param_dtype, rngs=nnx.Rngs(args.seed))
  flat = {("bert", *p): v for p, v in mapping.flat_params(encoder).items()}
  flat.update({("text_projection", *p): v for p, v in mapping.flat_params(projection).items()})
  return mapping.materialize(abstract, flat, args.seed)


def _convert_convnext(args) -> nnx.Module:
  sd = state_dict_io.load_state_dict(args.input, args.strip_prefix)
  return convnext_weights.load_convnext(sd, source=args.input)


COMMANDS = {
    "mvit": (_convert_mvit,
             "a torchvision mvit_v2_s state dict, incl. EchoPrime's video encoder (head 768->512); "
             "the head size is read from the file"),
    "echoprime-text": (_convert_echoprime_text,
                       "EchoPrime's text-encoder file (backbone.bert.*, backbone.cls.* dropped, "
                       "text_projection.*); the BERT shape is read from the tensors"),
    "hf-bert": (_convert_hf_bert,
                "a local Hugging Face BERT directory (config.json + model.safetensors or "
                "pytorch_model.bin [+ vocab.txt]); tokenizer files are copied along"),
    "convnext": (_convert_convnext,
                 "a torchvision convnext_* state dict, incl. EchoPrime's 11-view classifier; "
                 "depths, widths and head size are read from the file"),
}


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      prog="python -m echoprime_jax.convert_weights", description=__doc__,
      formatter_class=argparse.RawDescriptionHelpFormatter)
  sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
  for name, (_, help_text) in COMMANDS.items():
    p = sub.add_parser(name, help=help_text, description=help_text)
    p.add_argument("--input", required=True,
                   help="the weight file (.safetensors / .pt / .pth / .bin / .ckpt)"
                   if name != "hf-bert" else "the Hugging Face checkpoint directory")
    p.add_argument("--output", required=True,
                   help="new directory for the tower checkpoint (tower.json + params/)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing checkpoint at --output")
    if name != "hf-bert":
      p.add_argument("--strip-prefix", default=None,
                     help="remove this prefix from every key first (e.g. 'model.' for "
                     "Lightning checkpoints; DDP's 'module.' is removed automatically)")
    if name == "echoprime-text":
      p.add_argument("--bert-config", default=None,
                     help="a Hugging Face config.json for the BERT (default: inferred from the "
                     "tensor shapes, 64-d heads, LayerNorm eps 1e-12 as in BiomedBERT)")
    if name == "hf-bert":
      p.add_argument("--as-text-encoder", action="store_true",
                     help="write an EchoPrime-style text encoder (BERT + a new, seeded "
                     "Linear(hidden -> --out-dim) projection) instead of a bare BERT")
      p.add_argument("--out-dim", type=cli.at_least(1), default=512,
                     help="projection size with --as-text-encoder (default 512)")
      p.add_argument("--seed", type=int, default=0,
                     help="seed of the new projection with --as-text-encoder (default 0)")
  return parser


def main(argv: list[str] | None = None) -> int:
  logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
  args = build_parser().parse_args(argv)
  convert, _ = COMMANDS[args.command]

  def convert_and_write() -> None:
    # The output is checked first, replaced only when the new tower is complete, and only if
    # it is a tower folder we wrote (`run.output_folder`): a typo'd --input loses nothing.
    output_folder.check_replaceable(args.output, "tower", args.overwrite)
    model = convert(args)
    with output_folder.atomic(args.output, "tower", args.overwrite) as tmp:
      tower_folder.save_tower(tmp, model, source=args.input)
      if args.command == "hf-bert":
        copied = []
        for name in _TOKENIZER_FILES:
          src = os.path.join(args.input, name)
          if os.path.isfile(src):
            os.makedirs(os.path.join(tmp, "tokenizer"), exist_ok=True)
            shutil.copy(src, os.path.join(tmp, "tokenizer"))
            copied.append(name)
        if copied:
          log.info("tokenizer files copied to the tower's tokenizer/: %s", ", ".join(copied))
    log.info("wrote %s tower (%s parameters) to %s", tower_folder.kind_of(model),
             f"{layers.param_count(model):,}", args.output)

  return cli.run(convert_and_write)  # WeightImportError, UnsafeCheckpointError: ValueErrors


if __name__ == "__main__":
  sys.exit(main())
