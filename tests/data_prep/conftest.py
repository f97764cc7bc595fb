"""Shared fixtures: one synthetic archive with junk mixed in, converted once per session."""

import pydicom
import pytest

from data_prep import synthetic
from tests.data_prep.archive import convert_archive


@pytest.fixture(scope="session")
def archive(tmp_path_factory):
  """6 synthetic studies (96x128 clips and stills) + a text file, a truncated file, an empty
  file, a zero-frame file, a CT image and an oversized file."""
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


@pytest.fixture(scope="session")
def converted(archive, tmp_path_factory):
  """(shard folder, manifest rows) of the archive converted with 2 worker processes."""
  out = tmp_path_factory.mktemp("shards")
  return out, convert_archive(archive, out, workers=2)
