"""Export embeddings for downstream work: per video, per study, per report section.

  python -m echoprime_jax.export --towers PRETRAIN_RUN --data SHARDS --split val --out DIR \\
      [--mil MIL_RUN | --table TABLE.csv] [--views VIEW_RUN]
  python -m echoprime_jax.export --towers ECHOPRIME_IMPORTED --tokenizer BiomedBERT/ ...

What it writes: `inference/split_export.py` (printed below by --help).
"""

from __future__ import annotations

import argparse
import logging
import sys


def main(argv: list[str] | None = None) -> int:
  from echoprime_jax.inference import split_export
  p = argparse.ArgumentParser(prog="python -m echoprime_jax.export",
                              description=__doc__ + "\n" + split_export.__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--towers", required=True,
                 help="pretraining run folder (configs/pretrain.py --workdir): its best "
                      "checkpoint's video and text towers and its tokenizer; or an imported "
                      "EchoPrime release (python -m echoprime_jax.release import), with "
                      "--tokenizer")
  p.add_argument("--tokenizer", default="",
                 help="with an imported EchoPrime release: BiomedBERT's tokenizer folder "
                      "(vocab.txt), which its text tower reads and the release does not ship")
  p.add_argument("--data", required=True, help="data_prep output folder (shards)")
  p.add_argument("--split", default="val", help="split to export (default val)")
  p.add_argument("--out", required=True, help="output folder")
  group = p.add_mutually_exclusive_group()
  group.add_argument("--mil", default="", help="MIL run folder (configs/mil.py --workdir): "
                     "section embeddings from its best checkpoint")
  group.add_argument("--table", default="", help="EchoPrime-format attention CSV: section "
                     "embeddings by that fixed table")
  p.add_argument("--views", default="",
                 help="view-classifier run folder (configs/views.py --workdir): adds each "
                      "video's predicted view and its probability; the aggregator then reads "
                      "the predicted views instead of the shards' labels")
  from echoprime_jax.runtime.cli import at_least
  p.add_argument("--batch", type=at_least(1), default=32,
                 help="videos / texts per step over all devices (default 32)")
  p.add_argument("--section_len", type=at_least(4), default=128,
                 help="tokens per report section (default 128, the MIL stage's)")
  args = p.parse_args(argv)
  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
  logging.getLogger("absl").setLevel(logging.WARNING)  # Orbax's per-restore chatter
  from echoprime_jax.runtime import xla_flags
  xla_flags.apply()
  from echoprime_jax.runtime import cli

  def export() -> None:
    counts = split_export.export_split(split_export.ExportRequest(**vars(args)))
    print(f"exported {counts['videos']} videos and {counts['studies']} studies of split "
          f"{args.split!r} to {args.out}" + (f" (+ {counts['sections']} section embeddings "
                                             "each)" if counts["sections"] else ""))
  return cli.run(export)


if __name__ == "__main__":
  sys.exit(main())
