"""The conversion of `data_prep.convert` as an Apache Beam pipeline, for archive-scale runs.

  python -m data_prep.beam_convert --input ARCHIVE --output SHARDS --reports reports.csv \\
      --key-file deid.key -- --runner=DataflowRunner --project=... --region=...

Everything after `--` goes to Beam as pipeline options (default: the DirectRunner, which
runs in this process). The stages and the per-file / per-shard functions are exactly those
of `data_prep.convert` (`probe`, `assign`, `plan_shards`, `write_shard`, `finish`), so both
front ends write byte-compatible shards, the same manifest and the same study index:

  MatchFiles(ARCHIVE/**) -> probe each file (parallel) -> plan (one global step: studies,
  splits, shard assignment) -> Reshuffle -> write each shard (parallel, atomic, resumable)
  -> finish (manifest, studies.parquet, TFDS metadata; one step).

The workers read inputs and write shards through the local filesystem (pydicom and
ArrayRecord need paths), so ARCHIVE and SHARDS must be mounted on every worker (e.g. GCS
FUSE, Filestore or a shared NFS volume on Dataflow / Flink / Spark). The plan step holds one
small dict per input file in memory (~1 KB each: ~12 GB for 12M files; size the machine).
A rerun with the same inputs and options skips shards that completed, like the local tool.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

from data_prep import convert, deid


def _file_task(path: str, input_dir: str, key: bytes) -> tuple[str, str]:
  """A matched path -> (path, file_key): the same keyed pseudonym as the local tool."""
  return path, deid.Pseudonymizer(key)("file", os.path.relpath(path, input_dir))


def _probe(item: tuple[str, str], key: bytes, opts: convert.Options) -> dict[str, Any]:
  path, file_key = item
  return convert.probe((path, file_key, key, opts))


def _plan(rows: list[dict[str, Any]], out_dir: str, opts: convert.Options,
          reports_path: str | None, labels: dict[str, str]) -> dict[str, Any]:
  rows = sorted(rows, key=lambda r: r["_path"])  # the same order as the local tool
  report_by_key = convert.load_reports(reports_path) if reports_path else {}
  pending, study_reports = convert.assign(rows, opts, report_by_key, labels, bool(reports_path))
  shards = convert.plan_shards(pending, opts)
  convert.record_plan(out_dir, shards, opts)
  logging.info("planned %d shards from %d files", len(shards), len(rows))
  return {"rows": rows, "shards": shards, "study_reports": study_reports}


def _write(shard: dict[str, Any], out_dir: str, opts: convert.Options) -> list[dict[str, Any]]:
  return convert.write_shard((shard, out_dir, opts))


def _finish(plan: dict[str, Any], written: list[list[dict[str, Any]]], out_dir: str,
            input_dir: str, mapping_file: str | None) -> int:
  rows = [r for shard_rows in written for r in shard_rows]
  manifest = convert.finish(out_dir, plan["rows"], rows, plan["study_reports"], input_dir,
                            mapping_file)
  return len(manifest)


def build(pipeline, input_dir: str, out_dir: str, key: bytes, opts: convert.Options,
          reports_path: str | None = None, labels_path: str | None = None,
          mapping_file: str | None = None):
  """Adds the conversion to `pipeline`; returns the PCollection holding the manifest size."""
  import apache_beam as beam
  from apache_beam.io import fileio

  input_dir = os.path.abspath(input_dir)
  labels = {}
  if labels_path:  # small (one row per labelled video): read on the driver, sent to the plan
    labels = convert.load_labels(labels_path, convert.list_inputs(input_dir,
                                                                  deid.Pseudonymizer(key)))
  probed = (pipeline
            | "MatchFiles" >> fileio.MatchFiles(os.path.join(input_dir, "**"))
            | "Paths" >> beam.Map(lambda m: m.path)
            | "DropHidden" >> beam.Filter(lambda p: not os.path.basename(p).startswith(".")
                                          and os.path.isfile(p))
            | "FileKeys" >> beam.Map(_file_task, input_dir, key)
            | "Probe" >> beam.Map(_probe, key, opts))
  plan = (probed
          | "AllRows" >> beam.combiners.ToList()
          | "Plan" >> beam.Map(_plan, out_dir, opts, reports_path, labels))
  written = (plan
             | "Shards" >> beam.FlatMap(lambda p: p["shards"])
             | "Spread" >> beam.Reshuffle()
             | "WriteShard" >> beam.Map(_write, out_dir, opts)
             | "AllWritten" >> beam.combiners.ToList())
  return plan | "Finish" >> beam.Map(_finish, beam.pvalue.AsSingleton(written), out_dir,
                                     input_dir, mapping_file)


def run(input_dir: str, out_dir: str, key: bytes, opts: convert.Options,
        reports_path: str | None = None, labels_path: str | None = None,
        mapping_file: str | None = None, beam_args: list[str] | None = None) -> None:
  """Builds and runs the pipeline (DirectRunner unless beam_args choose another runner)."""
  import apache_beam as beam
  from apache_beam.options.pipeline_options import PipelineOptions

  os.makedirs(out_dir, exist_ok=True)
  with beam.Pipeline(options=PipelineOptions(beam_args or [])) as pipeline:
    build(pipeline, input_dir, out_dir, key, opts, reports_path, labels_path, mapping_file)


def main(argv: list[str] | None = None) -> int:
  argv = sys.argv[1:] if argv is None else argv
  split = argv.index("--") if "--" in argv else len(argv)
  ours, beam_args = argv[:split], argv[split + 1:]
  parser = convert.build_parser(
      "python -m data_prep.beam_convert",
      __doc__ + "\nAll flags below mean what they mean for `python -m data_prep.convert`; "
      "--workers is ignored (the runner decides parallelism).")
  args = parser.parse_args(ours)
  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
  try:
    key, opts = convert.key_and_options(args)
  except ValueError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  run(args.input, args.output, key, opts, args.reports, args.labels, args.mapping_file,
      beam_args)
  return 0


if __name__ == "__main__":
  sys.exit(main())
