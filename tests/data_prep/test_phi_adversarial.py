"""Adversarial PHI: known PHI planted in pixels, headers, reports, UIDs, folder and file names
goes through the real converter CLI (`python -m data_prep.convert`); nothing of it may survive
in shard frames, output bytes, parquet cells or the converter's stdout/stderr.

Pixels: each layout is converted as two twins (`phi_corpus.Layout.frames`), with and without
its planted text / with other strip content; stored frames must be bit-identical, so any planted
pixel inside the stored mask fails the test (and a control with text inside the fan proves the
check can fail). One conversion per corpus and option set serves every test (module fixtures).
"""

import json

import pytest

from tests.data_prep import phi_corpus as pc

MAIN = {layout.name: layout for layout in pc.main_layouts()}
CENTRAL = {layout.name: layout for layout in pc.central_layouts()}


def _twins(root, layouts, *flags):
  """{"planted" | "clean": (Corpus, Run)}: each twin in its own input folder, same paths."""
  runs = {}
  for twin in ("planted", "clean"):
    corpus = pc.write_layouts(root / twin, layouts, twin == "planted")
    runs[twin] = corpus, pc.run_convert(corpus.root, root / f"out_{twin}", *flags)
  return runs


@pytest.fixture(scope="module")
def main_runs(tmp_path_factory):
  """Every pixel layout + the control, default options (uncertain sectors rejected)."""
  return _twins(tmp_path_factory.mktemp("phi_main"), [*MAIN.values(), pc.CONTROL],
                "--keep-stills")


@pytest.fixture(scope="module")
def central_runs(tmp_path_factory):
  return _twins(tmp_path_factory.mktemp("phi_central"), CENTRAL.values(),
                "--uncertain-sector", "central-crop")


@pytest.fixture(scope="module")
def reports_runs(tmp_path_factory):
  """{mode: (Corpus, Run)}: the report corpus under the default (scrub), reject and keep."""
  root = tmp_path_factory.mktemp("phi_reports")
  corpus = pc.write_report_corpus(root)
  modes = {"scrub": (), "reject": ("--report-phi", "reject"), "keep": ("--report-phi", "keep")}
  return {mode: (corpus, pc.run_convert(corpus.root, root / f"out_{mode}", "--reports",
                                        str(corpus.reports), *flags))
          for mode, flags in modes.items()}


@pytest.fixture(scope="module")
def ids_runs(tmp_path_factory):
  """Odd UIDs and patient-named folders / files, with 1 and 2 worker processes."""
  root = tmp_path_factory.mktemp("phi_ids")
  corpus = pc.write_identifier_corpus(root / "dicom")
  return {f"workers{w}": (corpus, pc.run_convert(corpus.root, root / f"out{w}", workers=w))
          for w in (1, 2)}


RUNS = ["main-planted", "main-clean", "central-planted", "central-clean", "reports-scrub",
        "reports-reject", "reports-keep", "ids-workers1", "ids-workers2"]


def _run(request, run_id):
  group, key = run_id.split("-", 1)
  return request.getfixturevalue(f"{group}_runs")[key]


def _ran(run):
  assert run.returncode == 0, pc.describe(run)
  assert "Traceback" not in run.log, pc.describe(run)


def _check_expect(row, expect):
  assert row["status"] in expect.statuses, (row["status"], row["reason"])
  if row["status"] == "converted" and expect.source:
    assert row["region_source"] == expect.source, row["region_source"]
  if row["status"] == "rejected" and expect.reason:
    reason = row["reason"]
    ok = reason.startswith(expect.reason) if expect.reason_start else expect.reason in reason
    assert ok, f"reason {reason!r} should {'start with' if expect.reason_start else 'hold'} " \
               f"{expect.reason!r}"


def _assert_twins_identical(runs, layout):
  """Whatever is stored of the planted twin equals the clean twin, bit for bit, and holds the
  fan. Nothing stored (rejected) is fine here; the outcome tests say when it is expected."""
  (_, planted), (_, clean) = runs["planted"], runs["clean"]
  _ran(planted)
  _ran(clean)
  if planted.row(layout.relpath)["status"] != "converted":
    return
  twin = clean.row(layout.relpath)
  assert twin["status"] == "converted", f"converted only with planted content: {twin['reason']}"
  a, b = planted.video(layout.relpath), clean.video(layout.relpath)
  crops = planted.record(layout.relpath)["crop"], clean.record(layout.relpath)["crop"]
  diff = pc.frames_differ(a, b)
  assert not diff, (f"planted text / strip content reached the stored frames: {diff}; "
                    f"crops {crops[0].tolist()} vs {crops[1].tolist()}")
  assert (b > 0).mean() > 0.15, "the sector itself was not kept"


# ------------------------------------------------------------------------------ sectors


@pytest.mark.parametrize("name", list(MAIN))
def test_layout_outcome(main_runs, name):
  """Status / region_source / reason per layout (spec: duplex and M-mode keep the fan of the
  2D region; spectral-only is rejected; untrusted regions and strips fall back to the moving
  cone; static clips are rejected; stills are converted without text or rejected)."""
  _, run = main_runs["planted"]
  _ran(run)
  _check_expect(run.row(MAIN[name].relpath), MAIN[name].expect)


@pytest.mark.parametrize("name", list(MAIN))
def test_planted_pixels_are_never_stored(main_runs, name):
  """Text in region corners, strips and margins (white and coloured) and the strip's content
  never reach a stored frame: the planted twin's frames equal the clean twin's."""
  _assert_twins_identical(main_runs, MAIN[name])


def test_differential_check_is_sensitive(main_runs):
  """Text inside the fan is stored, so its twins differ: the check above can fail."""
  (_, planted), (_, clean) = main_runs["planted"], main_runs["clean"]
  _ran(planted)
  a, b = planted.video(pc.CONTROL.relpath), clean.video(pc.CONTROL.relpath)
  assert pc.frames_differ(a, b), "text inside the fan left the stored frames unchanged"


@pytest.mark.parametrize("name", list(CENTRAL))
def test_uncertain_sector_central_crop(central_runs, name):
  """--uncertain-sector central-crop: a static clip becomes the middle half of the frame (or
  of its 2D region); text in the outer quarters is not stored."""
  layout = CENTRAL[name]
  _, run = central_runs["planted"]
  _ran(run)
  _check_expect(run.row(layout.relpath), layout.expect)
  _assert_twins_identical(central_runs, layout)
  h, w = layout.shape
  x0, y0, x1, y1 = layout.regions[0][:4] if layout.regions else (0, 0, w - 1, h - 1)
  cx, cy, span = (x0 + x1 + 1) / 2, (y0 + y1 + 1) / 2, max(x1 - x0 + 1, y1 - y0 + 1)
  crop_x, crop_y, side = (int(v) for v in run.record(layout.relpath)["crop"])
  assert abs(crop_x + side / 2 - cx) <= 3 and abs(crop_y + side / 2 - cy) <= 3, (crop_x, crop_y)
  assert 0.45 * span <= side <= 0.55 * span, side


# ------------------------------------------------------------------------------ every run


@pytest.mark.parametrize("run_id", RUNS)
def test_run_exits_cleanly_and_lists_every_file_once(request, run_id):
  corpus, run = _run(request, run_id)
  _ran(run)
  keys = sorted(r["file_key"] for r in run.manifest)
  assert keys == sorted(pc.file_key(f) for f in corpus.files())
  assert {r["status"] for r in run.manifest} <= {"converted", "skipped", "rejected"}


@pytest.mark.parametrize("run_id", RUNS)
def test_no_planted_string_in_outputs_or_logs(request, run_id):
  """Header PHI, raw UIDs (odd ones too, with 1 and 2 workers), patient-named paths and report
  PHI: in no output byte, file name, parquet cell, JSON text, record field, stdout or stderr."""
  corpus, run = _run(request, run_id)
  _ran(run)
  planted = corpus.planted
  if run_id == "reports-keep":  # stored as given by request: only what the reports hold is ok
    given = (pc.REPORT_WITH_PHI + pc.REPORT_CLEAN).lower()
    planted = [p for p in planted if not any(v.lower() in given for v in pc.variants(p))]
  pc.assert_no_phi(run.out_dir, {"stdout": run.stdout, "stderr": run.stderr}, planted)


# ------------------------------------------------------------------------------ reports


def _report_studies(runs, mode):
  corpus, run = runs[mode]
  _ran(run)
  return (run.study(corpus.layouts["report-phi"].uid("study")),
          run.study(corpus.layouts["report-clean"].uid("study")))


def _assert_counts(study):
  assert "report_redactions" in study, sorted(study)
  counts = pc.json_counts(study["report_redactions"])
  assert all(counts.get(k, 0) > 0 for k in pc.REDACTION_KINDS), counts


def test_report_phi_is_scrubbed_by_default(reports_runs):
  phi, clean = _report_studies(reports_runs, "scrub")
  for s in pc.CLINICAL:
    assert s in phi["report"] and s in clean["report"], s
  pc.assert_no_phi(None, {"report": phi["report"], "sections": phi["sections"]}, pc.REPORT_PHI)
  _assert_counts(phi)


def test_report_phi_reject_stores_no_report_with_phi(reports_runs):
  phi, clean = _report_studies(reports_runs, "reject")
  assert phi["report"] == "" and not any(json.loads(phi["sections"]).values())
  _assert_counts(phi)
  assert all(s in clean["report"] for s in pc.CLINICAL), clean["report"]


def test_report_phi_keep_stores_the_report_as_given(reports_runs):
  phi, clean = _report_studies(reports_runs, "keep")
  assert phi["report"].split() == pc.REPORT_WITH_PHI.split()
  assert clean["report"].split() == pc.REPORT_CLEAN.split()


# ------------------------------------------------------------------------------ identifiers


@pytest.mark.parametrize("workers", ["workers1", "workers2"])
def test_corrupt_and_truncated_files_in_patient_folders_are_not_converted(ids_runs, workers):
  """Junk bytes, a truncated clip and a note in patient-named folders: one row each (checked
  for every run above), never converted; the truncated clip is rejected."""
  _, run = ids_runs[workers]
  _ran(run)
  assert run.row("SMITH^JANE_19600101/JANE_SMITH_19600101.dcm")["status"] == "rejected"
  for path in ("DOE^JOHN_19700101/SMITH_JANE_DOB19600101.dcm",
               "DOE^JOHN_19700101/DOE_JOHN_19700101_notes.txt"):
    assert run.row(path)["status"] != "converted", path


@pytest.mark.parametrize("target", ["mapping.jsonl", "nested/ids.jsonl"])
def test_mapping_file_inside_the_output_is_refused(tmp_path, target):
  pc.write_layout(tmp_path / "in", pc.plain("mapping", 50), False)
  out = tmp_path / "out"
  run = pc.run_convert(tmp_path / "in", out, "--mapping-file", str(out / target))
  assert run.returncode == 2, pc.describe(run)
  assert "Traceback" not in run.stderr
  lines = [line for line in run.stderr.splitlines() if line.strip()]
  assert len(lines) == 1 and "mapping" in lines[0].lower(), run.stderr
  assert not (out / target).exists()
