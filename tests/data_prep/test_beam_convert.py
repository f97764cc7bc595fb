"""data_prep.beam_convert on Beam's DirectRunner writes what the local tool writes."""

import math
import os

import pyarrow.parquet as pq

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
