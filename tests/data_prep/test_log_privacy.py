"""Header values and input paths never reach a message: pydicom's warnings and logger are
silenced (also in spawned workers), `redact` scrubs paths / UIDs / dates / names, and
`data_prep.convert` prints and writes none of the values planted in an archive."""

from __future__ import annotations

import io
import logging
import os
import subprocess
import sys
import warnings

import numpy as np
import pydicom
import pytest
from pydicom import config

from data_prep import dicom_reader, dicom_writer, log_privacy, synthetic

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

ODD_STUDY_UID = "1.2.840.DOE.JOHN.19700101"  # letters in a UID
ODD_SOP_UID = "2.25.0123" + "4" * 70  # a leading zero, and 79 characters (> 64)
PATIENT_DIR = "DOE_JOHN_MRN123"
CUT_DIR = "ROE^RICHARD_MRN00999999"
JUNK_NAME = "SMITH_JANE_19800202.dcm"
PLANTED = ("DOE^JOHN", "DOE.JOHN", ODD_STUDY_UID, "19700101", "2.25.0123", "MRN00123456",
           PATIENT_DIR, "JOHN_DOE", "ROE^RICHARD", "ROE_RICHARD", "MRN00999999", "19650505",
           "SMITH_JANE", "SMITH^JANE", "19800202", "ACC7734")


def _clip(seed: int) -> tuple[np.ndarray, list]:
  rng = np.random.default_rng(seed)
  study = synthetic.make_study(rng, 0)
  video, box = synthetic.render_clip(rng, study, study.views[0], 6, 30.0, 96, 128,
                                     color=False)
  return np.ascontiguousarray(video[..., 0]), [box]


def _write_odd(path, seed: int, **header) -> str:
  """A clip whose header holds the planted values (validation off: pydicom refuses them)."""
  frames, regions = _clip(seed)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with config.disable_value_validation(), warnings.catch_warnings():
    warnings.simplefilter("ignore")
    return dicom_writer.write_us_dicom(str(path), frames, regions=regions, **header)


def _planted_archive(root) -> str:
  """A/DOE_JOHN_MRN123/ (two clips with odd UIDs, a person name, an MRN, dates), a clip whose
  pixel data is cut short (rejected while writing shards) and a junk file, both named after
  patients."""
  archive = os.path.join(root, "A")
  header = dict(patient_name="DOE^JOHN", patient_id="MRN00123456", study_uid=ODD_STUDY_UID,
                study_date="19700101", accession="ACC7734")
  _write_odd(os.path.join(archive, PATIENT_DIR, "JOHN_DOE_19700101.dcm"), 1,
             sop_uid=ODD_SOP_UID, series_uid=ODD_STUDY_UID + ".1", **header)
  _write_odd(os.path.join(archive, PATIENT_DIR, "JOHN_DOE_2.dcm"), 2,
             sop_uid="2.25.01230", series_uid=ODD_STUDY_UID + ".2", **header)
  cut = _write_odd(os.path.join(archive, CUT_DIR, "ROE_RICHARD_19650505.dcm"), 3,
                   patient_name="ROE^RICHARD", patient_id="MRN00999999",
                   study_uid="1.2.840.ROE.19650505", study_date="19650505")
  data = open(cut, "rb").read()
  with open(cut, "wb") as f:
    f.write(data[: len(data) * 2 // 3])  # header intact: passes the probe, fails decoding
  with open(os.path.join(archive, JUNK_NAME), "wb") as f:
    f.write(b"SMITH^JANE 19800202 " * 20)
  return archive


def _leaks(text: str) -> list[str]:
  return [s for s in PLANTED if s in text]


def _output_text(out_dir) -> str:
  """Every file's bytes (decoded leniently) plus the cells of every parquet table."""
  import pyarrow.parquet as pq
  parts = []
  for root, _, names in os.walk(out_dir):
    for name in names:
      path = os.path.join(root, name)
      parts.append(os.path.relpath(path, out_dir))
      parts.append(open(path, "rb").read().decode("latin-1"))
      if name.endswith(".parquet"):
        parts.append(repr(pq.read_table(path).to_pylist()))
  return "\n".join(parts)


def test_odd_values_really_make_pydicom_talk(tmp_path, monkeypatch):
  """The planted UID is one pydicom quotes when validating: the other tests can fail."""
  path = _write_odd(tmp_path / "a.dcm", 1, study_uid=ODD_STUDY_UID, sop_uid=ODD_SOP_UID)
  monkeypatch.setattr(config.settings, "reading_validation_mode", config.WARN)
  with pytest.warns(UserWarning, match="DOE.JOHN"):
    str(pydicom.dcmread(path, stop_before_pixels=True).StudyInstanceUID)


def test_reader_withholds_pydicom_warnings_and_logs(tmp_path, monkeypatch, caplog):
  path = _write_odd(tmp_path / PATIENT_DIR / "a.dcm", 1, study_uid=ODD_STUDY_UID,
                    sop_uid=ODD_SOP_UID, patient_name="DOE^JOHN")
  log_privacy.quiet_pydicom()
  # Validation back on and quiet_pydicom a no-op: the warnings capture alone must hold.
  monkeypatch.setattr(config.settings, "reading_validation_mode", config.WARN)
  monkeypatch.setattr(log_privacy, "quiet_pydicom", lambda: None)
  caplog.set_level(logging.DEBUG)
  with warnings.catch_warnings(record=True) as escaped:
    warnings.simplefilter("always")
    info = dicom_reader.read_info(path)
    frames = list(dicom_reader.iter_frames(info))
  assert info.identifiers["StudyInstanceUID"] == ODD_STUDY_UID and len(frames) == 6
  assert not escaped, [str(w.message) for w in escaped]
  assert not _leaks(caplog.text), caplog.text
  notes = [r.getMessage() for r in caplog.records if r.name == "data_prep.dicom_reader"]
  assert len(notes) == 1 and "UserWarning" in notes[0] and "withheld" in notes[0]
  assert PATIENT_DIR not in notes[0] and "a.dcm" not in notes[0]


def test_quiet_pydicom_replaces_every_record(caplog):
  root, child = logging.getLogger("pydicom"), logging.getLogger("pydicom.pixels.utils")
  seen = io.StringIO()
  loud = logging.StreamHandler(seen)  # what pydicom.config.debug() would add
  root.addHandler(loud)
  child.addHandler(loud)
  try:
    log_privacy.quiet_pydicom()
    log_privacy.quiet_pydicom()  # idempotent
    assert len(root.handlers) == 1 and isinstance(root.handlers[0], log_privacy._Withhold)
    assert not root.propagate
    assert not child.handlers and child.propagate
    assert config.settings.reading_validation_mode == config.IGNORE
    caplog.set_level(logging.DEBUG)
    root.warning("Invalid value for VR UI: '%s'", ODD_STUDY_UID)
    child.error("cannot decode %s for DOE^JOHN", ODD_SOP_UID)
    try:
      raise ValueError(ODD_STUDY_UID)
    except ValueError:
      root.exception("failed")
  finally:
    root.removeHandler(loud)
    child.removeHandler(loud)
  assert seen.getvalue() == ""
  assert [r.getMessage() for r in caplog.records] == [
      f"pydicom {level} {log_privacy.WITHHELD}" for level in ("WARNING", "ERROR", "ERROR")]
  assert not _leaks(caplog.text) and all(r.exc_info is None for r in caplog.records)


def test_redact():
  path = f"/data/in/{PATIENT_DIR}/JOHN_DOE_19700101.dcm"
  rel = f"{PATIENT_DIR}/JOHN_DOE_19700101.dcm"
  cases = {
      f"{path}: not a DICOM file": "<path>: not a DICOM file",
      f"cannot open {rel} (x)": "cannot open <path> (x)",
      f"folder {PATIENT_DIR} says JOHN_DOE_19700101": "folder <path> says <path>",
      f"Invalid value for VR UI: '{ODD_STUDY_UID}'.": "Invalid value for VR UI: '<uid>'.",
      f"uids {ODD_SOP_UID} 1.2.826.0.1.3680043.8.498.1 2.25.0123": "uids <uid> <uid> <uid>",
      "born 19700101, seen 20200101123000": "born <date>, seen <date>",
      "name 'VAN DER BERG^ANNA' and DOE^JOHN^^": "name '<name>' and <name>",
      # public registry UIDs, versions, numbers and generic folder names survive
      "syntax 1.2.840.10008.1.2.4.50, pydicom 3.0.2, 1000 frames at 29.97 fps in data/":
          "syntax 1.2.840.10008.1.2.4.50, pydicom 3.0.2, 1000 frames at 29.97 fps in data/",
  }
  for text, want in cases.items():
    assert log_privacy.redact(text, path, rel) == want, text
  # short names are not hunted for inside words; the path still goes
  assert log_privacy.redact("A bad file in /x/A/b.dcm", "/x/A/b.dcm") == "A bad file in <path>"


@pytest.mark.parametrize("workers", [1, 2])
def test_convert_prints_and_writes_no_planted_value(tmp_path, workers):
  archive = _planted_archive(tmp_path)
  out = tmp_path / "O"
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  env["PYTHONWARNINGS"] = "always"  # nothing hidden by the default once-per-location filter
  run = subprocess.run(
      [sys.executable, "-m", "data_prep.convert", "--input", archive, "--output", str(out),
       "--insecure-test-key", "--workers", str(workers), "--size", "64"],
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
  console = run.stdout + run.stderr
  assert run.returncode == 0, console[-3000:]
  assert not _leaks(console), (_leaks(console), console[-3000:])
  assert not _leaks(_output_text(out)), _leaks(_output_text(out))
  import pyarrow.parquet as pq
  manifest = pq.read_table(out / "manifest.parquet").to_pylist()
  status = sorted(r["status"] for r in manifest)
  assert status == ["converted", "converted", "rejected", "rejected"], manifest
