"""`python -m echoprime_jax.interpret` on a held-out synthetic study with the tiny runs' models:
views, attention, report, measurements with their neighbours, the JSON and the HTML page
(rendered in headless Chromium), and clear errors for bad folders. The study sits in a folder
named like a patient, beside a corrupt file also so named: no folder or file name, and no
header value, reaches the JSON, the page, stdout or stderr; files are named by number."""

import csv
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from data_prep import reports, synthetic

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _cli(*args, timeout=600):
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  return subprocess.run([sys.executable, "-m", "echoprime_jax.interpret", *map(str, args)],
                        cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def screenshot(html_path, png_path, width=1280, height=2000):
  """The page rendered by headless Chromium (Debian's `chromium` package) -> PNG."""
  assert CHROMIUM, ("Chromium is needed to render the HTML page: `apt-get install chromium` "
                    "(the README's test command installs it)")
  run = subprocess.run(
      [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
       "--no-first-run", "--disable-background-networking", "--disable-component-update",
       "--disable-sync", f"--user-data-dir={png_path.parent / 'chromium-profile'}",
       "--hide-scrollbars", f"--window-size={width},{height}", f"--screenshot={png_path}",
       f"file://{html_path}"], capture_output=True, text=True, timeout=120)
  assert run.returncode == 0 and png_path.exists(), run.stderr[-2000:]
  from PIL import Image
  return np.asarray(Image.open(png_path).convert("RGB"))


@pytest.fixture(scope="module")
def database(tiny_mil_run, tmp_path_factory):
  mil_dir, run = tiny_mil_run
  assert run.returncode == 0, run.stderr[-3000:]
  db = tmp_path_factory.mktemp("interpret_db") / "db"
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  built = subprocess.run([sys.executable, "-m", "echoprime_jax.index", "build", "--mil_run",
                          str(mil_dir), "--out", str(db)], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=300)
  assert built.returncode == 0, built.stderr[-3000:]
  return db


PATIENT_DIR = "DOE^JOHN_MRN00123456"
FILE_PREFIX = "JOHN_DOE_19700101"
JUNK = "SMITH_JANE.dcm"
NAMES = ("DOE^JOHN", "MRN00123456", "JOHN_DOE", "19700101", "SMITH_JANE", "SMITH^JANE")


def _as_patient_folder(study_dir, tmp_path):
  """A copy of `study_dir` in PATIENT_DIR/, each file renamed FILE_PREFIX_<name> (same order),
  plus JUNK (after them in name order) -> (folder, the junk file's number, header values)."""
  import pydicom
  folder = tmp_path / PATIENT_DIR
  folder.mkdir()
  values = set()
  names = sorted(os.listdir(study_dir))
  for name in names:
    shutil.copy(os.path.join(study_dir, name), folder / f"{FILE_PREFIX}_{name}")
    ds = pydicom.dcmread(os.path.join(study_dir, name), stop_before_pixels=True)
    values |= {str(ds.get(k, "")) for k in ("PatientName", "PatientID", "StudyInstanceUID",
                                             "SeriesInstanceUID", "SOPInstanceUID",
                                             "StudyDate", "AccessionNumber")}
  (folder / JUNK).write_bytes(b"SMITH^JANE 19800202 " * 20)
  values.discard("")
  return folder, len(names) + 1, tuple(sorted(values)) + NAMES + (str(study_dir),
                                                                   str(tmp_path))


def _leaks(text: str, planted) -> list[str]:
  return [v for v in planted if v in text]


def test_study_reader_names_files_by_number_only(tmp_path, caplog, capsys):
  """read_study on a patient-named folder: the corrupt file is "file #k", nothing else named;
  errors say STUDY_DIR, never the folder."""
  from echoprime_jax.inference import study_reader
  synthetic.write_archive(str(tmp_path / "archive"), studies=1, seed=5, frames=8,
                          size=(96, 128), still_fraction=0.0, progress=False)
  folder, junk, planted = _as_patient_folder(tmp_path / "archive" / "dicom" / "study_00000",
                                             tmp_path)
  caplog.set_level("DEBUG")
  study = study_reader.read_study(str(folder), 64, max_frames=8, progress=False)
  assert [v.number for v in study.videos] == list(range(1, junk))
  assert study.num_files == junk and not hasattr(study, "files")
  [(number, status, reason)] = study.not_used
  assert (number, status) == (junk, "rejected") and "not a DICOM file" in reason
  assert f"file #{junk}" in caplog.text
  out, err = capsys.readouterr()
  for text in (repr(study.not_used), caplog.text, out, err):
    assert not _leaks(text, planted), _leaks(text, planted)

  only_junk = tmp_path / "DOE_JOHN_1970"
  only_junk.mkdir()
  shutil.copy(folder / JUNK, only_junk / JUNK)
  for bad, message in ((only_junk, "no usable echo clip among 1 files (file #1: not a DICOM"),
                       (tmp_path / "missing_DOE_JOHN", "STUDY_DIR is not a folder")):
    with pytest.raises(study_reader.StudyReadError) as error:
      study_reader.read_study(str(bad), 64, progress=False)
    assert message in str(error.value)
    assert not _leaks(str(error.value), planted + ("DOE_JOHN",)), str(error.value)


def _held_out_study(archive):
  """(folder, ground truth row, [(file name, view, frames)]) of the demo's held-out study."""
  from echoprime_jax import demo
  folder, row = demo.Demo(str(archive.parent), demo.QUICK).held_out_study()
  index = int(row["study_index"])
  files = [(os.path.basename(v["file"]), v["view"], int(v["frames"]))
           for v in csv.DictReader(open(archive / "videos.csv"))
           if int(v["study_index"]) == index]
  return folder, row, files


def test_interprets_a_held_out_study(database, tiny_mil_run, tiny_views_run,
                                     demo_archive, demo_shards, tmp_path):
  views_dir, views_run = tiny_views_run
  assert views_run.returncode == 0, views_run.stderr[-3000:]
  held_out, truth, files = _held_out_study(demo_archive)
  folder, junk, planted = _as_patient_folder(held_out, tmp_path)
  out = tmp_path / "out"
  run = _cli(folder, "--model", tiny_mil_run[0], "--index", database, "--views", views_dir,
             "--out", out, "--k", "10")
  assert run.returncode == 0, run.stderr[-3000:]
  assert "REPORT" in run.stdout and "MEASUREMENTS" in run.stdout
  result = json.load(open(out / "interpretation.json"))

  # every clip interpreted, stills and the corrupt file listed as not used (by number, with
  # the reason)
  clips = sorted((f for f in files if f[2] > 1), key=lambda f: f[0])
  stills = [f for f in files if f[2] == 1]
  assert len(result["videos"]) == len(clips)
  assert len(result["not_used"]) == len(stills) + 1
  assert all("still image" in n["reason"] for n in result["not_used"][:-1])
  assert result["not_used"][-1]["number"] == junk
  assert "not a DICOM file" in result["not_used"][-1]["reason"]
  # privacy: no folder or file name, header value or input path anywhere; numbers only
  page = (out / "report.html").read_text()
  for name, text in (("json", (out / "interpretation.json").read_text()), ("html", page),
                     ("stdout", run.stdout), ("stderr", run.stderr)):
    assert not _leaks(text, planted), (name, _leaks(text, planted))
  assert f"file #{junk}" in page and f"file #{junk}" in run.stderr
  # the models by folder name only: no absolute path in the outputs
  assert os.sep not in json.dumps(result["models"]) and result["models"]["mil"] == "mil"
  demo_dir = os.path.dirname(str(tiny_mil_run[0]))
  assert demo_dir not in (out / "interpretation.json").read_text() and demo_dir not in page
  # predicted views: the tiny classifier is ~98% right on held-out videos
  predicted = [v["view"] for v in result["videos"]]
  hits = sum(p == view for p, (_, view, _) in zip(predicted, clips))
  assert hits >= len(clips) - 1, (predicted, clips)
  assert all(0.0 < v["view_probability"] <= 1.0 for v in result["videos"])

  # attention: 15 sections x the study's videos, each row a distribution
  attention = np.asarray(result["attention"])
  assert attention.shape == (15, len(clips))
  np.testing.assert_allclose(attention.sum(1), 1.0, atol=1e-4)

  # report: canonical section order, each from a candidate of the database
  names = list(result["report"])
  assert names == [s for s in reports.SECTIONS if s in names] and "Left Ventricle" in names
  import pyarrow.parquet as pq
  candidates = set(pq.read_table(database / "candidates.parquet").to_pydict()["study_id"])
  assert {s["study_id"] for s in result["report_sources"].values()} <= candidates
  # measurements: every rule, from its own section, with the nearest neighbours behind it
  m = result["measurements"]
  assert set(m) == {"lvef", "lv_systolic_dysfunction", "lv_dysfunction_grade", "lv_dilation",
                    "pericardial_effusion", "left_atrium_dilation"}
  assert m["lvef"]["section"] == "Left Ventricle"
  # the LVEF is the mean of the n of the 10 nearest candidates that state one, the 5 listed
  # being the first: so it lies between those 5 completed by the database's lowest and highest
  # stated LVEF
  from echoprime_jax.retrieval.database import CandidateDatabase
  stated = CandidateDatabase.load(str(database)).labels["lvef"]
  stated = stated[~np.isnan(stated)]
  shown, n = sum(v["value"] for v in m["lvef"]["nearest"]), m["lvef"]["neighbours"]
  assert len(m["lvef"]["nearest"]) == 5 and 5 <= n <= 10
  assert ((shown + (n - 5) * stated.min()) / n - 1e-9 <= m["lvef"]["value"]
          <= (shown + (n - 5) * stated.max()) / n + 1e-9)
  assert m["pericardial_effusion"]["section"] == "Pericardium"
  assert m["pericardial_effusion"]["grade"] in ("none", "mild", "moderate", "severe")
  for entry in m.values():
    scores = [n["score"] for n in entry["nearest"]]
    assert 1 <= len(scores) <= 5 and scores == sorted(scores, reverse=True)
    assert {n["study_id"] for n in entry["nearest"]} <= candidates
  lvefs = [n["value"] for n in m["lvef"]["nearest"]]
  assert all(isinstance(v, float) for v in lvefs)

  # the page: self-contained, one thumbnail strip per video, rendered in Chromium
  assert page.count("<img ") == len(clips) and "http" not in page.split("<body>")[1]
  assert "Pericardium" in page and "Ejection fraction" in page
  shot = screenshot(out / "report.html", tmp_path / "page.png")
  ink = (shot < 235).any(axis=-1)
  assert ink.mean() > 0.05, "the page rendered (almost) blank"
  colours = np.unique(shot.reshape(-1, 3)[::7], axis=0)
  assert len(colours) > 100, "no images / heatmap on the page"
  top = shot[:400]  # the thumbnails sit near the top: dark ultrasound pixels
  assert (top.max(-1) < 40).mean() > 0.05


def test_bad_folders_get_a_clear_message(database, tiny_mil_run, tmp_path):
  empty = tmp_path / "empty"
  empty.mkdir()
  run = _cli(empty, "--model", tiny_mil_run[0], "--index", database, "--out", tmp_path / "o")
  assert run.returncode == 2 and "the folder is empty" in run.stderr
  (tmp_path / "bad").mkdir()
  (tmp_path / "bad" / "IM_0001").write_bytes(b"not a dicom at all")
  run = _cli(tmp_path / "bad", "--model", tiny_mil_run[0], "--index", database, "--out",
             tmp_path / "o")
  assert run.returncode == 2
  assert "no usable echo clip" in run.stderr and "file #1: not a DICOM file" in run.stderr
  assert "IM_0001" not in run.stderr  # files are named by number only
  run = _cli(tmp_path / "missing", "--model", tiny_mil_run[0], "--index", database, "--out",
             tmp_path / "o")
  assert run.returncode == 2 and "not a folder" in run.stderr
  assert str(tmp_path) not in run.stderr
  assert not (tmp_path / "o").exists()
