"""Interpret one study: a folder of DICOM or video files -> report, measurements, evidence.

  python -m echoprime_jax.interpret STUDY_DIR --model MIL_RUN --index DB --out DIR \\
      [--views VIEW_RUN] [--k 50] [--match section|report] [--consensus 1] [--thresholds FILE]
  python -m echoprime_jax.interpret STUDY_DIR --release IMPORTED --out DIR [--echoprime-compat]

With --release (an EchoPrime release imported by `python -m echoprime_jax.release import`) the
study is interpreted as EchoPrime's released inference does (`release/interpretation.py`).

STUDY_DIR -> data prep's reader and preprocessing (`study_reader.py`) -> the video tower (the
towers the MIL run was trained on) -> views (a view-classifier run; without one the views are
unknown and the aggregator sees no view features) -> the MIL aggregator's per-section pooling
and attention -> each section's nearest candidates in the database (`index build`) -> the
report (per section, the nearest candidate having it) and the measurements (kNN over each
label's own section's neighbours). Printed, and written to DIR:
  interpretation.json   videos (view, probability), attention (section x video), report with
                        the candidate each section came from, measurements with their nearest
                        neighbours, files not used and why, the models used (folder base names)
  report.html           the same as one self-contained page (thumbnails, attention heatmap,
                        report, measurements with neighbours)
Files are named only by number ("file #3": position in file-name order), in the JSON, the page,
the console and error messages alike: study folders and files are often named after the
patient, so no path, folder or file name of STUDY_DIR is printed or written, and reasons are
redacted of UIDs, dates and names. The library: `inference/interpretation.py`.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys


def main(argv: list[str] | None = None) -> int:
  p = argparse.ArgumentParser(prog="python -m echoprime_jax.interpret", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("study_dir", help="folder with one study's DICOM and / or video files (AVI, "
                 "MP4, MOV, MKV: EchoPrime's own inference reads MP4)")
  p.add_argument("--model", default="",
                 help="MIL run folder (configs/mil.py --workdir); its towers (the pretraining "
                      "run it names, or its converted weights) embed the videos")
  p.add_argument("--index", default="",
                 help="candidate database folder (python -m echoprime_jax.index build)")
  p.add_argument("--release", default="",
                 help="instead of --model / --index / --views: an imported EchoPrime release "
                      "(python -m echoprime_jax.release import), interpreted as EchoPrime's "
                      "own inference does (first-frame views, the fixed MIL table, k = 50, its "
                      "thresholds), each phenotype read from its own section's neighbours")
  p.add_argument("--echoprime-compat", action="store_true",
                 help="with --release: pair phenotypes with sections by position, as the "
                      "released code does (most phenotypes then read another section's "
                      "neighbours; for comparison with EchoPrime's own outputs)")
  p.add_argument("--out", required=True, help="folder for interpretation.json and report.html")
  p.add_argument("--views", default="",
                 help="view-classifier run folder (configs/views.py --workdir); without it "
                      "the views are unknown")
  from echoprime_jax.runtime.cli import at_least
  p.add_argument("--k", type=at_least(1), default=50,
                 help="neighbours per measurement (default 50)")
  p.add_argument("--match", default="section", choices=("section", "report"),
                 help="search each section against the candidates' same-section embeddings "
                      "(section, default) or their whole-report embeddings (report)")
  p.add_argument("--consensus", type=at_least(1), default=1,
                 help="each report section from the nearest neighbour having it (1, "
                      "EchoPrime's rule) or the medoid of the N nearest having it")
  p.add_argument("--thresholds", default="",
                 help="JSON {label: threshold} for binary labels (default 0.5 each; with "
                      "--release, the release's roc_thresholds.csv, which these override)")
  args = p.parse_args(argv)
  if args.release and (args.model or args.index or args.views):
    p.error("--release replaces --model, --index and --views: give one or the other")
  if not args.release and not (args.model and args.index):
    p.error("give --model and --index (this project's MIL run and database), or --release")
  if args.echoprime_compat and not args.release:
    p.error("--echoprime-compat applies to --release only")
  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
  logging.getLogger("absl").setLevel(logging.WARNING)
  from echoprime_jax.runtime import xla_flags
  xla_flags.apply()
  from echoprime_jax.inference import interpretation
  from echoprime_jax.runtime import cli

  def interpret() -> None:
    from echoprime_jax.run import output_folder
    # --out first: a folder we would refuse to write must not cost the whole interpretation
    output_folder.check_replaceable(args.out, interpretation.OUTPUT_KIND, overwrite=True)
    thresholds = {}
    if args.thresholds:
      try:
        with open(args.thresholds) as f:
          thresholds = {str(k): float(v) for k, v in json.load(f).items()}
      except (json.JSONDecodeError, AttributeError, TypeError, ValueError):
        raise ValueError(f"{args.thresholds}: --thresholds must be a JSON object "
                         "{label: number}") from None
    if args.release:
      from echoprime_jax.release import interpretation as release_interpretation
      result, strips = release_interpretation.interpret_study(
          args.study_dir, args.release, k=args.k, compat=args.echoprime_compat,
          thresholds=thresholds)
    else:
      result, strips = interpretation.interpret_study(
          args.study_dir, model=args.model, index=args.index, views=args.views, k=args.k,
          match=args.match, thresholds=thresholds, consensus=args.consensus)
    interpretation.write_outputs(result, strips, args.out)
    print(interpretation.summary_text(result))
    print("\nwrote interpretation.json and report.html to the --out folder")
  return cli.run(interpret)


if __name__ == "__main__":
  sys.exit(main())
