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

The de-identification key never travels with the pipeline: the graph carries only a
`deid.KeySource` (the --key-file path, or the name of $ECHOPRIME_DEID_KEY), and the per-file
steps are DoFns that load the key in `setup()` on the worker. So the key file must be readable
at the same path on every worker (e.g. a mounted secret), or $ECHOPRIME_DEID_KEY set in every
worker's environment; the key never enters pipeline options, side inputs or the staged graph.
The driver loads it too, in its own memory, for the --labels join.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

from data_prep import convert, deid, echonet

try:
  import apache_beam as beam
except ImportError:  # an install without Beam can still import this module (and read --help)
  beam = None


class _KeyedDoFn(beam.DoFn if beam else object):
  """A per-file step that holds a KeySource when pickled and the key only after `setup()`,
  which runs on the worker after unpickling."""

  def __init__(self, keys: deid.KeySource):
    super().__init__()
    self._keys = keys
    self._key: bytes | None = None

  def setup(self) -> None:
    self._key = self._keys.load()

  def __getstate__(self) -> dict[str, Any]:  # never pickle a loaded key
    return {**self.__dict__, "_key": None}


class _FileKeys(_KeyedDoFn):
  """A matched path -> (path, file_key): the same keyed pseudonym as the local tool."""

  def __init__(self, input_dir: str, keys: deid.KeySource):
    super().__init__(keys)
    self._input_dir = input_dir

  def process(self, path: str):
    rel = os.path.relpath(path, self._input_dir)
    yield path, deid.Pseudonymizer(self._key)("file", rel), rel


class _Probe(_KeyedDoFn):
  """(path, file_key) -> the probed manifest row (`convert.probe`)."""

  def __init__(self, keys: deid.KeySource, opts: convert.Options):
    super().__init__(keys)
    self._opts = opts

  def process(self, item: tuple[str, str, str]):
    path, file_key, rel = item
    yield convert.probe((path, file_key, self._key, self._opts, rel))


def _require_beam() -> None:
  if beam is None:
    raise ImportError("Apache Beam is not installed: pip install -r requirements-beam.txt")


def _key_source(keys: deid.KeySource | bytes) -> deid.KeySource:
  """Key bytes would be pickled into the graph: only the public test key is accepted as bytes
  (it has a key-free source); a real key must come as a KeySource."""
  if isinstance(keys, deid.KeySource):
    return keys
  if keys == deid.INSECURE_TEST_KEY:
    return deid.KeySource(None, None, insecure_test_key=True)
  raise TypeError("pass a deid.KeySource (where the key is), not the key: the pipeline graph "
                  "is staged to the runner")


def _plan(rows: list[dict[str, Any]], out_dir: str, opts: convert.Options,
          reports_path: str | None, labels: dict[str, str], input_dir: str) -> dict[str, Any]:
  rows = sorted(rows, key=lambda r: r["_path"])  # the same order as the local tool
  report_by_key = convert.load_reports(reports_path) if reports_path else {}
  file_list = echonet.read_file_list(input_dir) if opts.layout == "echonet" else None
  pending, study_reports = convert.assign(rows, opts, report_by_key, labels, bool(reports_path),
                                          file_list)
  shards = convert.plan_shards(pending, opts)
  convert.record_plan(out_dir, shards, opts)
  logging.info("planned %d shards from %d files", len(shards), len(rows))
  return {"rows": rows, "shards": shards, "study_reports": study_reports,
          "file_list": file_list}


def _write(shard: dict[str, Any], out_dir: str, opts: convert.Options) -> list[dict[str, Any]]:
  return convert.write_shard((shard, out_dir, opts))


def _finish(plan: dict[str, Any], written: list[list[dict[str, Any]]], out_dir: str,
            input_dir: str, mapping_file: str | None) -> int:
  rows = [r for shard_rows in written for r in shard_rows]
  manifest = convert.finish(out_dir, plan["rows"], rows, plan["study_reports"], input_dir,
                            mapping_file, plan["file_list"])
  return len(manifest)


def build(pipeline, input_dir: str, out_dir: str, keys: deid.KeySource | bytes,
          opts: convert.Options, reports_path: str | None = None,
          labels_path: str | None = None, mapping_file: str | None = None):
  """Adds the conversion to `pipeline`; returns the PCollection holding the manifest size.

  keys: where the workers (and, for --labels, the driver) load the key from; see the module
  docstring."""
  _require_beam()
  from apache_beam.io import fileio

  keys = _key_source(keys)
  input_dir = os.path.abspath(input_dir)
  labels = {}
  if labels_path:  # small (one row per labelled video): read on the driver, sent to the plan
    pseudo = deid.Pseudonymizer(keys.load())  # driver memory only
    labels = convert.load_labels(labels_path, convert.list_inputs(input_dir, pseudo))
  probed = (pipeline
            | "MatchFiles" >> fileio.MatchFiles(os.path.join(input_dir, "**"))
            | "Paths" >> beam.Map(lambda m: m.path)
            | "DropHidden" >> beam.Filter(lambda p: not os.path.basename(p).startswith(".")
                                          and os.path.isfile(p))
            | "FileKeys" >> beam.ParDo(_FileKeys(input_dir, keys))
            | "Probe" >> beam.ParDo(_Probe(keys, opts)))
  plan = (probed
          | "AllRows" >> beam.combiners.ToList()
          | "Plan" >> beam.Map(_plan, out_dir, opts, reports_path, labels, input_dir))
  written = (plan
             | "Shards" >> beam.FlatMap(lambda p: p["shards"])
             | "Spread" >> beam.Reshuffle()
             | "WriteShard" >> beam.Map(_write, out_dir, opts)
             | "AllWritten" >> beam.combiners.ToList())
  return plan | "Finish" >> beam.Map(_finish, beam.pvalue.AsSingleton(written), out_dir,
                                     input_dir, mapping_file)


def run(input_dir: str, out_dir: str, keys: deid.KeySource | bytes, opts: convert.Options,
        reports_path: str | None = None, labels_path: str | None = None,
        mapping_file: str | None = None, beam_args: list[str] | None = None) -> None:
  """Builds and runs the pipeline (DirectRunner unless beam_args choose another runner)."""
  _require_beam()
  from apache_beam.options.pipeline_options import PipelineOptions

  os.makedirs(out_dir, exist_ok=True)
  with beam.Pipeline(options=PipelineOptions(beam_args or [])) as pipeline:
    build(pipeline, input_dir, out_dir, keys, opts, reports_path, labels_path, mapping_file)


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
    _, opts = convert.key_and_options(args)  # validates the flags and that a key loads here
  except ValueError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  keys = deid.KeySource.from_args(args.key_file, args.insecure_test_key)
  run(args.input, args.output, keys, opts, args.reports, args.labels, args.mapping_file,
      beam_args)
  return 0


if __name__ == "__main__":
  sys.exit(main())
