"""data_prep.convert end to end on a synthetic archive with junk mixed in."""

import json
import os

import numpy as np
import pydicom
import pyarrow.parquet as pq
import pytest

from data_prep import convert, deid, dicom_writer, record_schema, synthetic

from tests.archive import convert_archive as _convert
from tests.video_files import speckle_cone


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
  raw = reader.read([0])[0]
  rec = codec.decode(raw)
  assert rec["view"] and len(rec["frames"]) == rec["num_frames"]
  fast = codec.decode_video(raw)  # the training reader's fast path: same frames, same count
  assert fast["num_frames"] == rec["num_frames"] and fast["frames"] == list(rec["frames"])


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
  # a shard truncated after it was recorded as done (a disk filled up, a partial copy): its
  # record is not trusted, the shard is written again and reads whole
  (tmp_path / victim).write_bytes((tmp_path / victim).read_bytes()[:100])
  third = _convert(archive, tmp_path)
  assert sorted(first, key=lambda r: r["file_key"]) == sorted(third, key=lambda r: r["file_key"])
  assert convert._records_in(str(tmp_path / victim)) == sum(
      r["status"] == "converted" and r["shard"] == victim for r in first) > 0


def test_refuses_without_a_key(archive, tmp_path, monkeypatch, capsys):
  monkeypatch.delenv(deid.KEY_ENV, raising=False)
  assert convert.main(["--input", str(archive / "dicom"), "--output", str(tmp_path)]) == 2
  assert "--insecure-test-key" in capsys.readouterr().err
  assert not os.listdir(tmp_path)


def test_decode_reduction_never_upsamples():
  info = dict(rows=768, columns=1024)
  reduction = lambda side=None, **kw: convert.decode_reduction(  # noqa: E731
      type("Info", (), {**info, **kw})(), 224, side)
  assert reduction() == 2  # 768 / 2 = 384 >= 224; / 4 = 192 is not
  assert reduction(side=900) == 4 and reduction(side=300) == 1 and reduction(side=5000) == 8
  assert reduction(rows=200, columns=300) == 1


def test_reduced_jpeg_decoding_matches_full_decoding(tmp_path, monkeypatch):
  """Large JPEG clips are decoded at a reduced DCT scale; the output barely changes."""
  synthetic.write_archive(str(tmp_path), studies=2, seed=1, frames=6, size=(600, 800),
                          still_fraction=0.0, progress=False)
  path = next(str(p) for p in sorted((tmp_path / "dicom").rglob("*.dcm"))
              if str(pydicom.dcmread(p, stop_before_pixels=True).file_meta.TransferSyntaxUID)
              == "1.2.840.10008.1.2.4.50")
  row = {"video_id": "v", "study_id": "s", "patient_id": "p", "split": "train"}
  opts = convert.Options(size=128)
  seen = []
  iter_frames = convert.dicom_reader.iter_frames
  monkeypatch.setattr(convert.dicom_reader, "iter_frames",
                      lambda info, n, reduce=1: seen.append(reduce) or iter_frames(info, n, reduce))
  fast, _ = convert.convert_video(path, row, opts)
  reduce = seen[-1]
  assert reduce > 1  # the sector is > 2 x 128 px across: decoded at reduced scale
  monkeypatch.setattr(convert, "decode_reduction", lambda *a: 1)
  full, _ = convert.convert_video(path, row, opts)
  assert seen[-1] == 1
  # crop in source pixels; the sector estimate at 1/reduce scale is good to a few pixels there
  assert abs(fast["crop"] - full["crop"]).max() <= 3 * reduce
  a, b = record_schema.decode_frames(fast), record_schema.decode_frames(full)
  assert a.shape == b.shape and a.shape[:3] == (6, 128, 128)
  # JPEG's reduced DCT decode, plus the sector edge: it is pulled in by step + 1 grid pixels
  # (region._largest_sector), ~4 source px more per side at 1/4 scale, so a ring about one
  # output pixel wide around the sector differs (~2.5% of pixels, ~100 grey levels).
  assert abs(a.astype(int) - b).mean() < 6.0


def _speckle_cone(frames=6, h=120, w=160, seed=0):
  """(T, H, W, 3) grey speckle moving in a cone, coloured ECG trace outside it."""
  return speckle_cone(frames, h, w, seed)


@pytest.mark.parametrize("encoding", ["explicit_le", "jpeg_baseline"])
def test_grey_content_is_stored_as_one_channel_and_doppler_as_rgb(tmp_path, encoding):
  row = {"video_id": "v", "study_id": "s", "patient_id": "p", "split": "train"}
  opts = convert.Options(size=64)
  video, cone = _speckle_cone()
  grey = dicom_writer.write_us_dicom(str(tmp_path / "grey.dcm"), video, encoding)
  record, extra = convert.convert_video(grey, row, opts)
  assert record["channels"] == extra["channels"] == 1
  assert record_schema.decode_frames(record).shape == (6, 64, 64, 1)
  doppler = video.copy()
  doppler[3:, 40:70, 70:90] = (200, 30, 30)  # a red jet inside the sector, from frame 3 on
  path = dicom_writer.write_us_dicom(str(tmp_path / "doppler.dcm"), doppler, encoding)
  record, _ = convert.convert_video(path, row, opts)
  assert record["channels"] == 3
  out = record_schema.decode_frames(record).astype(int)
  red = out[..., 0] - out[..., 1] > 100
  assert red[:3].sum() == 0 and red[3:].sum(axis=(1, 2)).min() > 30  # the jet, from frame 3 on
  assert np.abs(out[:3, ..., 0] - out[:3, ..., 1]).max() <= 12  # early frames grey, replicated


def test_dangling_links_and_undecodable_names_are_rejected_by_pseudonym(tmp_path, caplog):
  """Per-file failures outside the DICOM reader (a link to nowhere, a name that is not UTF-8)
  are manifest rows whose reasons name neither the file nor its folder; the run goes on."""
  archive = tmp_path / "archive"
  folder = archive / "DOE_JOHN_00123456"
  folder.mkdir(parents=True)
  video, _ = _speckle_cone(frames=4)
  dicom_writer.write_us_dicom(str(folder / "clip.dcm"), video, "explicit_le")
  os.symlink(str(tmp_path / "MULLER_ANNA_missing.dcm"), str(folder / "MULLER_ANNA.dcm"))
  odd = os.path.join(os.fsencode(folder), b"M\xfcller_\xffKOWALSKI.dcm")
  with open(odd, "wb") as f:
    f.write(b"not dicom")
  caplog.set_level("DEBUG")
  manifest = convert.run(str(archive), str(tmp_path / "out"), deid.INSECURE_TEST_KEY,
                         convert.Options(size=32), progress=False)
  by_status = sorted((r["status"], r["reason"].split(":")[0]) for r in manifest)
  assert [s for s, _ in by_status] == ["converted", "rejected", "rejected"]
  text = json.dumps(manifest) + caplog.text
  for name in ("DOE", "JOHN", "00123456", "MULLER", "ANNA", "KOWALSKI", "ller", str(archive)):
    assert name not in text, name
  assert any("FileNotFoundError" in r["reason"] for r in manifest)


def test_free_text_in_coded_header_fields_is_never_quoted(tmp_path):
  """A name typed into NumberOfFrames, PhotometricInterpretation or Modality (free text where
  a code belongs) is not quoted in any reason: only defined terms are."""
  archive = tmp_path / "archive"
  archive.mkdir()
  planted = {"NumberOfFrames": ("IS", "BARTHOLOMEW"),
             "PhotometricInterpretation": ("CS", "PHINEAS FOGG"), "Modality": ("CS", "QUIMBY")}
  for i, (tag, (vr, value)) in enumerate(planted.items()):
    path = str(archive / f"{i}.dcm")
    dicom_writer.write_us_dicom(path, np.zeros((3, 32, 32), np.uint8), fps=30.0)
    ds = pydicom.dcmread(path)
    if tag == "Modality":  # not an ultrasound SOP class, so the modality decides
      ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.add_new(tag, "LO" if tag == "NumberOfFrames" else vr, value)  # LO: any text fits
    ds.save_as(path)
  manifest = convert.run(str(archive), str(tmp_path / "out"), deid.INSECURE_TEST_KEY,
                         convert.Options(size=32), progress=False)
  reasons = " | ".join(r["reason"] for r in manifest)
  assert all(r["status"] != "converted" for r in manifest), reasons
  for word in ("BARTHOLOMEW", "PHINEAS", "FOGG", "QUIMBY"):
    assert word not in reasons, reasons
  assert "invalid NumberOfFrames" in reasons
  assert reasons.count("<unrecognised value>") == 2  # photometric and modality
