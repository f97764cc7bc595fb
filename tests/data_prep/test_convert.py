"""data_prep.convert end to end on a synthetic archive with junk mixed in."""

import json
import os

import pydicom
import pyarrow.parquet as pq
import pytest

from data_prep import convert, deid, record_schema, synthetic

OPTS = convert.Options(size=64, max_frames=8, videos_per_shard=4, split_fractions=(0.5, 0.25, 0.25),
                       max_file_bytes=3 << 20)


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
  root = tmp_path_factory.mktemp("archive")
  synthetic.write_archive(str(root), studies=6, seed=3, frames=10, size=(96, 128), progress=False)
  junk = root / "dicom" / "junk"
  junk.mkdir()
  (junk / "notes.txt").write_text("Patient: " + "not an image")
  good = next((root / "dicom" / "study_00000").glob("00.dcm")).read_bytes()
  (junk / "truncated.dcm").write_bytes(good[: len(good) // 2])
  (junk / "empty.dcm").write_bytes(b"")
  ds = pydicom.dcmread(root / "dicom" / "study_00000" / "00.dcm")
  ds.NumberOfFrames = 0
  ds.save_as(junk / "zero_frames.dcm")
  ds = pydicom.dcmread(root / "dicom" / "study_00000" / "00.dcm")
  ds.Modality, ds.SOPClassUID = "CT", "1.2.840.10008.5.1.4.1.1.2"
  ds.save_as(junk / "ct.dcm")
  (junk / "huge.dcm").write_bytes(good + b"\0" * (3 << 20))  # over the test's 3 MiB limit
  return root


def _convert(archive, out, **kw):
  return convert.run(str(archive / "dicom"), str(out), deid.INSECURE_TEST_KEY,
                     kw.pop("opts", OPTS), str(archive / "reports.csv"),
                     str(archive / "videos.csv"), progress=False, **kw)


@pytest.fixture(scope="module")
def converted(archive, tmp_path_factory):
  out = tmp_path_factory.mktemp("shards")
  return out, _convert(archive, out, workers=2)


def test_every_input_file_is_in_the_manifest_once(archive, converted):
  out, _ = converted
  manifest = pq.read_table(out / "manifest.parquet").to_pylist()
  n_files = sum(len(files) for _, _, files in os.walk(archive / "dicom"))
  assert len(manifest) == n_files and len({r["file_key"] for r in manifest}) == n_files
  status = {}
  for r in manifest:
    status[r["status"]] = status.get(r["status"], 0) + 1
  # notes.txt, truncated.dcm, empty.dcm, zero_frames.dcm, huge.dcm
  assert status["rejected"] == 5
  reasons = " | ".join(r["reason"] for r in manifest)
  assert "oversized" in reasons and "zero frames" in reasons and "not a DICOM file" in reasons
  assert status["skipped"] >= 1  # the CT (+ stills)
  assert all(r["reason"] for r in manifest if r["status"] != "converted")
  assert any("not ultrasound" in r["reason"] for r in manifest)


def test_shards_read_back_through_tfds_and_decode(converted):
  import tensorflow_datasets as tfds
  out, manifest = converted
  builder = tfds.builder_from_directory(str(out))
  total = 0
  codec = record_schema.Codec()
  for split in builder.info.splits:
    source = builder.as_data_source(split)
    total += len(source)
    record = source[0]
    video = record_schema.decode_frames(record)
    assert video.shape == (record["num_frames"], 64, 64, record["channels"])
    assert record["schema_version"] == record_schema.SCHEMA_VERSION
  assert total == sum(r["status"] == "converted" for r in manifest)
  # the same bytes through our own codec (what the Grain pipeline uses)
  from array_record.python.array_record_module import ArrayRecordReader
  name = next(n for n in os.listdir(out) if n.startswith("echoprime-train.array_record"))
  reader = ArrayRecordReader(str(out / name))
  rec = codec.decode(reader.read([0])[0])
  assert rec["view"] and len(rec["frames"]) == rec["num_frames"]


def test_no_phi_in_any_output_byte_or_name(archive, converted):
  out, _ = converted
  phi = set()
  for root, _, files in os.walk(archive / "dicom" / "study_00000"):
    for f in files:
      ds = pydicom.dcmread(os.path.join(root, f), stop_before_pixels=True)
      phi |= {str(ds.PatientName), str(ds.PatientName).split("^")[0], str(ds.PatientID),
              str(ds.StudyInstanceUID), str(ds.SOPInstanceUID), str(ds.StudyDate),
              str(ds.AccessionNumber), "study_00000"}
  for root, _, files in os.walk(out):
    for f in files:
      blob = open(os.path.join(root, f), "rb").read()
      for needle in phi:
        assert needle.encode() not in blob, (needle, f)
        assert needle not in f


def test_no_patient_in_two_splits(converted):
  _, manifest = converted
  splits = {}
  for r in manifest:
    if r["status"] == "converted":
      splits.setdefault(r["patient_id"], set()).add(r["split"])
  assert all(len(s) == 1 for s in splits.values())
  assert len({s for v in splits.values() for s in v}) >= 2


def test_study_index_lists_videos_and_report_sections(converted):
  out, _ = converted
  studies = pq.read_table(out / "studies.parquet").to_pylist()
  assert studies and all(len(s["video_ids"]) == len(s["record_indices"]) for s in studies)
  assert all("Left Ventricle" in json.loads(s["sections"]) for s in studies)


def test_rerun_resumes_and_a_lost_shard_is_rewritten(archive, tmp_path):
  first = _convert(archive, tmp_path)
  shards = sorted(n for n in os.listdir(tmp_path) if ".array_record-" in n)
  victim = shards[0]
  stamp = {n: os.path.getmtime(tmp_path / n) for n in shards}
  # simulate a kill mid-shard: the shard never finished, only its temporary file exists
  os.rename(tmp_path / victim, tmp_path / (victim + ".tmp"))
  os.remove(tmp_path / "rows" / (victim + ".jsonl"))
  second = _convert(archive, tmp_path)
  assert sorted(first, key=lambda r: r["file_key"]) == sorted(second, key=lambda r: r["file_key"])
  assert os.path.exists(tmp_path / victim)
  for n in shards[1:]:
    assert os.path.getmtime(tmp_path / n) == stamp[n]  # finished shards were not redone


def test_refuses_without_a_key(archive, tmp_path, monkeypatch, capsys):
  monkeypatch.delenv(deid.KEY_ENV, raising=False)
  assert convert.main(["--input", str(archive / "dicom"), "--output", str(tmp_path)]) == 2
  assert "--insecure-test-key" in capsys.readouterr().err
  assert not os.listdir(tmp_path)
