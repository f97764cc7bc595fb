"""Synthetic archive: deterministic, decodable, reports agree with ground truth, findings visible."""

import csv
import filecmp
import os

import numpy as np
import pytest

from data_prep import dicom_reader as dr
from data_prep import reports, synthetic


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
  out = tmp_path_factory.mktemp("synth")
  truth = synthetic.write_archive(str(out), studies=3, seed=7, frames=12, progress=False)
  return str(out), truth


def test_same_seed_same_bytes(archive, tmp_path):
  out, _ = archive
  synthetic.write_archive(str(tmp_path), studies=3, seed=7, frames=12, progress=False)
  for name in ("reports.csv", "ground_truth.csv", "videos.csv"):
    assert filecmp.cmp(os.path.join(out, name), tmp_path / name, shallow=False)
  first = os.path.join("dicom", "study_00000", "00.dcm")
  assert filecmp.cmp(os.path.join(out, first), tmp_path / first, shallow=False)
  other = tmp_path / "other"
  synthetic.write_archive(str(other), studies=1, seed=8, frames=12, progress=False)
  assert not filecmp.cmp(os.path.join(out, first), other / first, shallow=False)


def test_every_file_decodes_with_its_recorded_properties(archive):
  out, truth = archive
  rows = list(csv.DictReader(open(os.path.join(out, "videos.csv"))))
  assert len(rows) >= sum(len(s.views) for s in truth)
  encodings = set()
  for row in rows:
    info, video = dr.read_video(os.path.join(out, row["file"]))
    assert video.shape[0] == int(row["frames"])
    assert info.is_ultrasound and info.tissue_region() is not None
    if row["fps"]:
      assert info.fps == pytest.approx(float(row["fps"]), rel=1e-3)
    encodings.add(row["encoding"])
  assert len(encodings) >= 2


def test_reports_have_sections_and_state_the_truth(archive):
  out, truth = archive
  by_uid = {r["StudyInstanceUID"]: r["report"]
            for r in csv.DictReader(open(os.path.join(out, "reports.csv")))}
  for study in truth:
    sections = reports.parse_sections(by_uid[study.study_uid])
    assert {"Left Ventricle", "Pericardium", "Left Atrium"} <= set(sections)
    assert f"Ejection fraction is {study.lvef:.0f}%" in sections["Left Ventricle"]
    effusion = study.findings["pericardial_effusion"]
    assert (effusion in sections["Pericardium"]) if effusion != "none" else (
        "No pericardial effusion" in sections["Pericardium"])


def _study(lvef, effusion="none"):
  return synthetic.Study(0, "DOE^JANE", "MRN1", "2.25.1", "20200101", lvef,
                         {"pericardial_effusion": effusion, "left_atrium_dilation": "none"}, [])


def _cavity_area(video):
  """Blood pool pixels (dark after smoothing out the speckle) inside the sector, per frame."""
  from scipy import ndimage
  sector = ndimage.binary_erosion(video[..., 0].max(0) > 0, iterations=5)
  sector[170:] = False  # the ECG trace
  gray = ndimage.uniform_filter(video[..., 0].astype(np.float32), size=(1, 7, 7))
  return ((gray < 25) & sector).sum(axis=(1, 2))


def test_ejection_fraction_is_visible_as_cavity_change():
  rng = lambda: np.random.default_rng(3)
  low, _ = synthetic.render_clip(rng(), _study(25), "A2C", 40, 30.0, 192, 256, color=False)
  high, _ = synthetic.render_clip(rng(), _study(70), "A2C", 40, 30.0, 192, 256, color=False)
  change = lambda v: 1 - _cavity_area(v).min() / _cavity_area(v).max()
  # measured 0.17 vs 0.07 (the other chambers' static blood pools dilute both)
  assert change(high) > 0.1 and change(high) > 2 * change(low)
  # and the failing ventricle is dilated (the report calls EF < 50% dilated)
  assert _cavity_area(low).max() > 1.3 * _cavity_area(high).max()


def test_effusion_severity_is_visible():
  rng = lambda: np.random.default_rng(4)
  none, _ = synthetic.render_clip(rng(), _study(55, "none"), "Parasternal_Short", 4, 30.0, 192,
                                  256, color=False)
  severe, _ = synthetic.render_clip(rng(), _study(55, "severe"), "Parasternal_Short", 4, 30.0,
                                    192, 256, color=False)
  assert _cavity_area(severe).mean() > 1.2 * _cavity_area(none).mean()


def test_cli_help(capsys):
  with pytest.raises(SystemExit) as e:
    synthetic.main(["--help"])
  assert e.value.code == 0
  text = capsys.readouterr().out
  for flag in ("--out", "--studies", "--seed", "--frames", "--height", "--width",
               "--still-fraction"):
    assert flag in text, flag


@pytest.mark.parametrize("view", ["A4C", "Subcostal", "SSN"])
def test_burned_in_text_stays_outside_the_sector_at_small_sizes(view):
  # At 96 x 128 the header text is as wide as the sector's apex region; it must not be drawn
  # into the sector, where no mask could remove it. Rendering the same clip for two patients
  # (names, IDs and dates differ) must give the same sector pixels.
  a, b = _study(55), _study(55)
  b.patient_name, b.patient_id, b.study_date = "Other^Person", "PID999999", "19991231"
  clip_a, _ = synthetic.render_clip(np.random.default_rng(5), a, view, 2, 30.0, 96, 128, False)
  clip_b, _ = synthetic.render_clip(np.random.default_rng(5), b, view, 2, 30.0, 96, 128, False)
  differs = (clip_a != clip_b).any(axis=(0, 3))
  assert differs[:24].any()  # the header is there, and differs between the patients ...
  (ax, ay, half, depth), _ = synthetic._VIEW_LAYOUT[view]
  yy, xx = np.mgrid[:96, :128]
  apex_x = clip_a.shape[2] * ax  # +- the renderer's ~1 px jitter of the apex: keep a margin
  r = np.hypot(xx - apex_x, yy - ay * 96)
  inside = (r > 6) & (r < depth * 96 - 1) & (np.abs(np.arctan2(xx - apex_x, yy - ay * 96))
                                             < half - 0.1)
  assert not (differs & inside).any()  # ... but never inside the sector


@pytest.mark.parametrize("finding,study_a,study_b", [
    ("lvef", dict(lvef=65), dict(lvef=25)),
    ("pericardial_effusion", dict(effusion="none"), dict(effusion="severe")),
    ("left_atrium_dilation", dict(atrium="none"), dict(atrium="severe")),
])
def test_each_finding_is_drawn_only_in_its_views(finding, study_a, study_b):
  # Same random stream, two studies differing in one finding: the clips differ exactly in the
  # views that show it (module docstring's table), by many pixels, and are identical elsewhere.
  def study(lvef=55, effusion="none", atrium="none"):
    s = _study(lvef, effusion)
    s.findings["left_atrium_dilation"] = atrium
    return s
  a, b = study(**study_a), study(**study_b)
  for view in synthetic._VIEW_LAYOUT:
    clip_a, _ = synthetic.render_clip(np.random.default_rng(6), a, view, 3, 30.0, 96, 128, True)
    clip_b, _ = synthetic.render_clip(np.random.default_rng(6), b, view, 3, 30.0, 96, 128, True)
    changed = (clip_a != clip_b).any(axis=(0, 3)).sum()
    if view in synthetic.FINDING_VIEWS[finding]:
      assert changed > 150, (view, changed)  # at 96 x 128: > 1.2% of the frame
    else:
      assert changed == 0, (view, changed)


def test_every_study_has_the_protocol_views():
  rng = np.random.default_rng(0)
  for i in range(50):
    views = synthetic.make_study(rng, i).views
    assert set(synthetic.PROTOCOL_VIEWS) <= set(views) and len(set(views)) == len(views)
    assert 3 <= len(views) <= 6


@pytest.mark.parametrize("view", ["A4C", "Parasternal_Long", "Parasternal_Short", "Subcostal"])
def test_ecg_trace_and_cursor_stay_outside_the_sector(view):
  # At 96 x 128 the ECG row crosses the sector's arc: drawn there it would be image, and colour
  # in a grey clip. Colour pixels (the trace, the cursor, the view label) are never inside it.
  clip, _ = synthetic.render_clip(np.random.default_rng(8), _study(55), view, 24, 30.0, 96, 128,
                                  True)
  colour = (np.ptp(clip.astype(int), axis=-1) > 30).any(0)
  assert colour[80:].sum() > 100  # the trace is drawn ...
  (ax, ay, half, depth), _ = synthetic._VIEW_LAYOUT[view]
  yy, xx = np.mgrid[:96, :128]
  apex_x = 128 * ax  # +- the renderer's ~1 px jitter of the apex: keep a margin
  r = np.hypot(xx - apex_x, yy - ay * 96)
  inside = (yy >= 24) & (r < depth * 96 - 2) & (np.abs(np.arctan2(xx - apex_x, yy - ay * 96))
                                                 < half - 0.05)  # above: the header's test
  assert not (colour & inside).any()  # ... but not through the image
