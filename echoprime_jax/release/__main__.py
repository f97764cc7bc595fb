"""EchoPrime's published release, imported once into this project's formats.

  python -m echoprime_jax.release import --release EchoPrime/model_data --out echoprime \\
      --trust-pickles
  python -m echoprime_jax.interpret STUDY_DIR --release echoprime --out report/

The release folder holds weights/ (video encoder, text encoder, view classifier), candidates_data/
(candidate embeddings, studies, phrase-coded reports, labels) and assets/ (MIL_weights.csv,
all_phr.json, per_section.json, roc_thresholds.csv, section_to_phenotypes.pkl); files are also
found by name anywhere under it. The output: three tower folders (usable by export, probe and
interpret), a candidate database (decoded report texts, labels, embeddings, index), the MIL table
and the phenotypes (see `release/layout.py`). Weights are read with torch.load(weights_only=True);
the three pickles only with --trust-pickles, through a restricted unpickler that refuses
anything but plain values (`release/safe_pickle.py`). Nothing reads a pickle after the import.
"""

from __future__ import annotations

import argparse
import logging
import sys


def main(argv: list[str] | None = None) -> int:
  p = argparse.ArgumentParser(prog="python -m echoprime_jax.release", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
  imp = sub.add_parser("import", help="convert an EchoPrime release folder",
                       description="Convert an EchoPrime release folder into this project's "
                                   "formats (towers, candidate database, MIL table, "
                                   "phenotypes).")
  imp.add_argument("--release", required=True,
                   help="the release folder (weights/, candidates_data/, assets/)")
  imp.add_argument("--out", required=True, help="new folder for the imported release")
  imp.add_argument("--trust-pickles", action="store_true",
                   help="read the release's three pickles (candidate reports, labels, section "
                        "map) with the restricted unpickler; without it the import stops")
  imp.add_argument("--index", default="auto", choices=("auto", "exact", "scann"),
                   help="candidate search index: exact below 20,000 candidates and ScaNN above "
                        "with auto (EchoPrime's 1,230,676 candidates: ScaNN)")
  imp.add_argument("--overwrite", action="store_true",
                   help="replace an imported release at --out (only one this command wrote; "
                        "the old one stays until the new one is complete)")
  args = p.parse_args(argv)
  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
  logging.getLogger("absl").setLevel(logging.WARNING)
  from echoprime_jax.runtime import cli

  def run() -> None:
    from echoprime_jax.release import importer
    summary = importer.import_release(args.release, args.out, trust_pickles=args.trust_pickles,
                                      index_kind=args.index, overwrite=args.overwrite)
    print(f"imported {summary['candidates']:,} candidates ({summary['index']} index, "
          f"{summary['embedding_dim']}-d), {summary['phenotypes']} phenotypes and three towers "
          f"-> {args.out}")
  return cli.run(run)


if __name__ == "__main__":
  sys.exit(main())
