"""data_prep.beam_convert on Beam's DirectRunner writes what the local tool writes."""

import math
import os

import pyarrow.parquet as pq
import pytest

from data_prep import beam_convert, deid
from tests.archive import OPTS


def _table(path):
  """Rows sorted by key, NaN as None (NaN != NaN would fail any comparison)."""
  rows = [{k: None if isinstance(v, float) and math.isnan(v) else v for k, v in r.items()}
          for r in pq.read_table(path).to_pylist()]
  return sorted(rows, key=lambda r: r.get("file_key") or r["study_id"])


def test_direct_runner_matches_the_local_conversion(archive, converted, tmp_path):
  local, _ = converted
  out = tmp_path / "beam"
  beam_convert.run(str(archive / "dicom"), str(out), deid.INSECURE_TEST_KEY, OPTS,
                   str(archive / "reports.csv"), str(archive / "videos.csv"),
                   beam_args=["--runner=DirectRunner"])
  assert _table(out / "manifest.parquet") == _table(local / "manifest.parquet")
  assert _table(out / "studies.parquet") == _table(local / "studies.parquet")
  shards = sorted(n for n in os.listdir(local) if ".array_record-" in n)
  assert shards and shards == sorted(n for n in os.listdir(out) if ".array_record-" in n)
  for name in shards:  # byte-identical records: one per-file function behind both front ends
    assert (out / name).read_bytes() == (local / name).read_bytes(), name
  assert os.path.exists(out / "dataset_info.json")

  # The CLI with the same options resumes: completed shards are not rewritten.
  stamps = {n: os.path.getmtime(out / n) for n in shards}
  rc = beam_convert.main([
      "--input", str(archive / "dicom"), "--output", str(out), "--insecure-test-key",
      "--reports", str(archive / "reports.csv"), "--labels", str(archive / "videos.csv"),
      "--size", "64", "--max-frames", "8", "--videos-per-shard", "4",
      "--split-fractions", "0.5,0.25,0.25", "--max-file-gb", str((3 << 20) / (1 << 30)),
      "--", "--runner=DirectRunner"])
  assert rc == 0
  assert all(os.path.getmtime(out / n) == stamps[n] for n in shards)
  assert _table(out / "manifest.parquet") == _table(local / "manifest.parquet")


def _visible(blob: bytes, depth: int = 3) -> bytes:
  """`blob` plus the plain bytes of every base64 + zlib/bz2 payload inside it (how Beam stores
  pickled functions in the graph), recursively: a key hidden by compression is found."""
  import base64
  import bz2
  import re
  import zlib
  found = [blob]
  if depth:
    for chunk in re.findall(rb"[A-Za-z0-9+/]{40,}={0,2}", blob):
      try:
        packed = base64.b64decode(chunk + b"=" * (-len(chunk) % 4))
      except ValueError:
        continue
      for unpack in (zlib.decompress, bz2.decompress):
        try:
          found.append(_visible(unpack(packed), depth - 1))
        except (OSError, ValueError, zlib.error):
          pass
  return b"\n".join(found)


def _graph(build_into) -> bytes:
  """The staged pipeline: its runner API proto, serialised, payloads opened."""
  import apache_beam as beam
  pipeline = beam.Pipeline(runner="DirectRunner")
  build_into(pipeline)
  return _visible(pipeline.to_runner_api().SerializeToString())


def test_the_key_never_enters_the_pipeline_graph(archive, tmp_path, monkeypatch):
  import apache_beam as beam
  from apache_beam.internal import pickler
  monkeypatch.delenv(deid.KEY_ENV, raising=False)
  key = b"0123456789abcdef-a secret de-identification key"
  key_file = tmp_path / "deid.key"
  key_file.write_bytes(key + b"\n")
  source = deid.KeySource.from_args(str(key_file), False)

  # The check can fail: the old way (key bytes as a Map argument) is found in the graph.
  old = _graph(lambda p: p | beam.Create(["x"]) | beam.Map(lambda x, k: x, key))
  assert key in old

  graph = _graph(lambda p: beam_convert.build(
      p, str(archive / "dicom"), str(tmp_path / "out"), source, OPTS,
      str(archive / "reports.csv"), str(archive / "videos.csv")))
  assert key not in graph and key.hex().encode() not in graph
  assert str(key_file).encode() in graph  # the graph carries where the key is instead

  # A DoFn holds the key only after setup() on the worker, and never pickles it.
  probe = beam_convert._FileKeys(str(archive / "dicom"), source)
  probe.setup()
  path = str(archive / "dicom" / "study_00000" / "00.dcm")
  assert list(probe.process(path)) == [
      (path, deid.Pseudonymizer(key)("file", "study_00000/00.dcm"), "study_00000/00.dcm")]
  assert key not in _visible(pickler.dumps(probe))
  # Real key bytes are refused (they would be staged); the public test key maps to a source.
  with pytest.raises(TypeError, match="KeySource"):
    beam_convert.build(beam.Pipeline(runner="DirectRunner"), str(archive / "dicom"),
                       str(tmp_path / "out"), key, OPTS)
