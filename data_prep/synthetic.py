"""Synthetic echo studies as real DICOM files plus reports: the archive every stage can run on.

  python -m data_prep.synthetic --out DIR --studies N --seed S

Each study (one synthetic patient) has several multi-frame ultrasound clips, sometimes a still,
a free-text report, and ground truth. A study follows a short protocol as echo labs do: the
parasternal long and short axis and the apical four-chamber view always, plus 0-3 other coarse
views; so each finding is shown by at least two of a study's clips.

* every view has its own geometry (sector apex, width, depth) and its own chamber layout, so
  views are learnable from pixels;
* each finding is drawn only in the views where it is assessed in real echo, and is large
  enough to see at the 64 px the demo trains on (see `FINDING_VIEWS` below);
* multiplicative speckle that decorrelates over time; burned-in header text with the
  (synthetic) patient's name and date, and an ECG trace with its cursor, outside the sector;
* encodings mixed as in real archives: JPEG baseline YBR_FULL_422, RLE, uncompressed RGB and
  MONOCHROME2 (`data_prep.dicom_writer`), SequenceOfUltrasoundRegions and FrameTime set.

Which views show which finding, and why (`FINDING_VIEWS`):

  finding               views                             why
  LVEF                  A4C, A2C, A3C, A5C,               the apical views show the whole LV
                        Parasternal_Short                 long axis (biplane Simpson's); the
                                                          mid short axis shows its wall motion
  pericardial effusion  Parasternal_Long, Parasternal_    fluid collects posteriorly (behind
                        Short, Doppler_Parasternal_Long,  the LV in parasternal views) and
                        Subcostal                         around the RV (subcostal); the
                                                          apical views, end-on, miss a small one
  left-atrial dilation  A4C, A2C, Parasternal_Long,       LA volume (A4C / A2C) and its antero-
                        Doppler_Parasternal_Long          posterior diameter (PLAX)

Elsewhere the cut is oblique or foreshortened and the structure *looks* like an arbitrary
grade: each clip draws its own LV (apparent EF uniform 15-75), LA size and echo-free band
(mimicking fat pads and pleural fluid), independent of the study's truth. A finding must be
read from the views that show it; pooling a study's videos uniformly mixes it with these
look-alikes, which is what learned attention per report section is for.

How each finding is drawn (distances in units of the sector depth R; ~0.7 px per unit of
0.01 R at the demo's 64 px):
* LVEF: the LV cavity's radii follow volume^(1/3) from end-diastole to end-systole, and the LV
  is dilated when the EF is low (+1.2% per point below 60%, at most 1.5x, as in dilated
  cardiomyopathy; the report calls EF < 50% dilated). EF is drawn from a mixture like an echo
  lab's case mix: 60% normal (N(62, 4), >= 54) and 40% reduced (uniform 15-50).
* pericardial effusion: an echo-free band between the LV's bright wall and the bright
  pericardium, 0 / 0.045 / 0.085 / 0.125 R wide for none / mild / moderate / severe.
* left-atrial dilation: the LA's radii x 1 / 1.22 / 1.44 / 1.66.
* colour-flow jets in the Doppler views.

Files: DIR/dicom/<study>/<n>.dcm, DIR/reports.csv (StudyInstanceUID, report),
DIR/ground_truth.csv (per study: LVEF, findings with severity) and DIR/videos.csv (per file:
view, encoding, frames, fps). Deterministic for a seed. Patient names and IDs are synthetic
but shaped like real PHI, so de-identification can be tested on them.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import math
import os
import sys

import numpy as np
from PIL import Image, ImageDraw

from data_prep import dicom_writer, reports
from data_prep.views import COARSE_VIEWS, DOPPLER_VIEWS

SEVERITIES = ("none", "mild", "moderate", "severe")
SEVERITY_P = (0.55, 0.2, 0.15, 0.1)  # how often each grade is true (and mimicked)
FINDINGS = ("pericardial_effusion", "left_atrium_dilation")

# The views where each finding (and the LVEF) can be read: module docstring.
FINDING_VIEWS = {
    "lvef": ("A4C", "A2C", "A3C", "A5C", "Parasternal_Short"),
    "pericardial_effusion": ("Parasternal_Long", "Parasternal_Short", "Doppler_Parasternal_Long",
                             "Subcostal"),
    "left_atrium_dilation": ("A4C", "A2C", "Parasternal_Long", "Doppler_Parasternal_Long"),
}
PROTOCOL_VIEWS = ("Parasternal_Long", "Parasternal_Short", "A4C")  # in every study

EFFUSION_WIDTH = (0.0, 0.045, 0.085, 0.125)  # per severity, in units of the sector depth
LA_SCALE = (1.0, 1.22, 1.44, 1.66)
_WALL = 0.03  # myocardium thickness (units of the sector depth)
_PERICARDIUM = 0.015

# Per view: sector (apex x as a fraction of width, apex y as a fraction of height, half-angle
# rad, depth as a fraction of height) and chambers as (name, centre x, centre y, radius x,
# radius y) in units of the depth R, x across from the apex, y down from it.
_VIEW_LAYOUT = {
    "A4C": ((0.50, 0.04, 0.70, 0.92), [("LV", -0.16, 0.37, 0.13, 0.22),
                                        ("RV", 0.16, 0.37, 0.11, 0.20),
                                        ("LA", -0.15, 0.76, 0.11, 0.09),
                                        ("RA", 0.15, 0.76, 0.10, 0.09)]),
    "A2C": ((0.50, 0.04, 0.62, 0.92), [("LV", 0.0, 0.38, 0.15, 0.24),
                                        ("LA", 0.0, 0.77, 0.13, 0.09)]),
    "A3C": ((0.50, 0.04, 0.65, 0.92), [("LV", -0.06, 0.38, 0.14, 0.23),
                                        ("LA", -0.08, 0.77, 0.11, 0.09),
                                        ("AO", 0.17, 0.66, 0.06, 0.12)]),
    "A5C": ((0.50, 0.04, 0.72, 0.92), [("LV", -0.16, 0.35, 0.13, 0.21),
                                        ("RV", 0.16, 0.35, 0.11, 0.19),
                                        ("AO", 0.0, 0.63, 0.05, 0.08),
                                        ("LA", -0.14, 0.81, 0.10, 0.07)]),
    "Apical_Doppler": ((0.50, 0.04, 0.70, 0.92), [("LV", -0.14, 0.40, 0.13, 0.22),
                                                  ("LA", -0.14, 0.78, 0.11, 0.09)]),
    "Parasternal_Long": ((0.50, 0.03, 0.55, 0.95), [("LV", -0.12, 0.56, 0.21, 0.10),
                                                    ("RV", -0.04, 0.25, 0.12, 0.05),
                                                    ("LA", 0.22, 0.60, 0.08, 0.08),
                                                    ("AO", 0.14, 0.38, 0.10, 0.05)]),
    "Doppler_Parasternal_Long": ((0.50, 0.03, 0.55, 0.95), [("LV", -0.12, 0.56, 0.21, 0.10),
                                                            ("LA", 0.22, 0.60, 0.08, 0.08)]),
    "Parasternal_Short": ((0.50, 0.03, 0.55, 0.95), [("LV", 0.0, 0.58, 0.15, 0.15),
                                                     ("RV", -0.12, 0.33, 0.09, 0.05)]),
    "Doppler_Parasternal_Short": ((0.50, 0.03, 0.55, 0.95), [("AO", 0.0, 0.52, 0.07, 0.07),
                                                             ("RA", -0.20, 0.50, 0.08, 0.08),
                                                             ("PA", 0.18, 0.38, 0.06, 0.10)]),
    "SSN": ((0.50, 0.03, 0.50, 0.90), [("AO", 0.0, 0.45, 0.22, 0.06),
                                        ("PA", 0.0, 0.72, 0.07, 0.06)]),
    "Subcostal": ((0.30, 0.05, 0.60, 0.90), [("LV", 0.14, 0.58, 0.12, 0.11),
                                             ("RV", -0.02, 0.40, 0.14, 0.07),
                                             ("LA", 0.20, 0.80, 0.08, 0.06),
                                             ("RA", 0.0, 0.78, 0.10, 0.06)]),
}

_FIRST_NAMES = ("ANNA", "JOHN", "MARIA", "WEI", "FATIMA", "OLIVER", "PRIYA", "CARLOS")
_LAST_NAMES = ("SMITH", "GARCIA", "NGUYEN", "MULLER", "OKAFOR", "KOWALSKI", "TANAKA", "SILVA")


@dataclasses.dataclass
class Study:
  """Ground truth of one synthetic study."""
  index: int
  patient_name: str
  patient_id: str
  study_uid: str
  study_date: str
  lvef: float
  findings: dict[str, str]
  views: list[str]


def make_study(rng: np.random.Generator, index: int, max_videos: int = 6) -> Study:
  """One study's ground truth: LVEF from the mixture in the module docstring, findings, and
  the protocol views plus 0 to max_videos - 3 others, in a random order."""
  if rng.random() < 0.6:
    lvef = float(np.clip(rng.normal(62, 4), 54, 75))
  else:
    lvef = float(rng.uniform(15, 50))
  findings = {f: SEVERITIES[int(rng.choice(4, p=SEVERITY_P))] for f in FINDINGS}
  others = [v for v in COARSE_VIEWS if v not in PROTOCOL_VIEWS]
  n = int(rng.integers(0, max(max_videos - len(PROTOCOL_VIEWS), 0) + 1))
  views = [*PROTOCOL_VIEWS, *(str(v) for v in rng.choice(others, size=n, replace=False))]
  views = [views[i] for i in rng.permutation(len(views))]
  name = f"{rng.choice(_LAST_NAMES)}^{rng.choice(_FIRST_NAMES)}"
  study_uid = f"2.25.{index + 1}{int(rng.integers(10**12, 10**13))}"  # deterministic per seed
  return Study(index, name, f"MRN{rng.integers(10**7, 10**8)}", study_uid,
               f"20{rng.integers(10, 25):02d}{rng.integers(1, 13):02d}{rng.integers(1, 28):02d}",
               lvef, findings, views)


def report_text(study: Study) -> str:
  """Free-text report with the EchoPrime section names; states LVEF and the findings."""
  s = {}
  lv = "Normal left ventricular size." if study.lvef >= 50 else "Left ventricle is mildly dilated."
  function = ("normal" if study.lvef >= 53 else "mildly reduced" if study.lvef >= 40 else
              "moderately reduced" if study.lvef >= 30 else "severely reduced")
  s["Left Ventricle"] = f"{lv} Systolic function is {function}. Ejection fraction is {study.lvef:.0f}%."
  s["Right Ventricle"] = "Normal right ventricular size and function."
  la = study.findings["left_atrium_dilation"]
  s["Left Atrium"] = "Normal left atrial size." if la == "none" else f"The left atrium is {la}ly dilated."
  s["Mitral Valve"] = "Structurally normal mitral valve. Trace mitral regurgitation."
  s["Aortic Valve"] = "Trileaflet aortic valve without stenosis."
  pe = study.findings["pericardial_effusion"]
  s["Pericardium"] = "No pericardial effusion." if pe == "none" else f"There is a {pe} pericardial effusion."
  s["IVC"] = "Normal inferior vena cava size with respiratory variation."
  return "\n".join(f"{k}: {v}" for k, v in reports.parse_sections(
      "\n".join(f"{k}: {v}" for k, v in s.items())).items())


def _shown(finding: str, view: str) -> bool:
  return view in FINDING_VIEWS[finding]


def render_clip(rng: np.random.Generator, study: Study, view: str, frames: int, fps: float,
                height: int, width: int, color: bool) -> tuple[np.ndarray, tuple[int, int, int, int]]:
  """(T, H, W, 3) uint8 clip and the sector's bounding box (x0, y0, x1, y1). The random draws
  do not depend on the findings: one rng state gives the same clip for two studies wherever
  the view does not show what differs between them."""
  (ax, ay, half, depth), chambers = _VIEW_LAYOUT[view]
  apex = (ax * width + rng.normal(0, 0.01) * width, ay * height)
  radius = depth * height
  yy, xx = np.mgrid[:height, :width].astype(np.float32)
  x, y = (xx - apex[0]) / radius, (yy - apex[1]) / radius  # units of the depth R
  r, ang = np.hypot(x, y), np.arctan2(x, y)
  sector = (r < 1) & (np.abs(ang) < half)
  # what an oblique cut makes a structure look like, drawn whatever the view (the stream of
  # random numbers must not depend on the view or the findings)
  mimic = {"lvef": float(rng.uniform(15, 75)),
           **{f: SEVERITIES[int(rng.choice(4, p=SEVERITY_P))] for f in FINDINGS}}
  lvef = study.lvef if _shown("lvef", view) else mimic["lvef"]
  ed_to_es = (1 - lvef / 100.0) ** (1 / 3)  # radius ratio for the EF's volume ratio
  lv_dilation = min(1 + 0.012 * max(0.0, 60.0 - lvef), 1.5)  # end-diastolic size
  grade = lambda f: SEVERITIES.index(  # noqa: E731
      study.findings[f] if _shown(f, view) else mimic[f])
  la_scale = LA_SCALE[grade("left_atrium_dilation")]
  effusion = EFFUSION_WIDTH[grade("pericardial_effusion")]
  cycle = rng.uniform(0.8, 1.2)  # seconds per beat
  phase0 = rng.uniform(0, 1)
  tissue = rng.uniform(0.35, 0.55)
  persistent = rng.rayleigh(0.6, (height, width)).astype(np.float32)
  video = np.zeros((frames, height, width, 3), np.uint8)
  x0, y0 = int(max(np.floor(apex[0] - radius * math.sin(half)), 0)), int(apex[1])
  box = (x0, y0, int(min(np.ceil(apex[0] + radius * math.sin(half)), width - 1)),
         int(min(np.ceil(apex[1] + radius), height - 1)))
  ellipse = lambda cx, cy, rx, ry: ((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2 < 1  # noqa: E731
  for t in range(frames):
    phase = (t / fps / cycle + phase0) % 1.0
    contraction = 0.5 * (1 - math.cos(2 * math.pi * phase))  # 0 at end-diastole, 1 at systole
    image = np.full((height, width), tissue, np.float32)
    for name, cx, cy, rx, ry in chambers:
      if name == "LV":
        s = lv_dilation * (1 - (1 - ed_to_es) * contraction)
        rx, ry = rx * s, ry * s
        wall, fluid = _WALL, _WALL + effusion
        if effusion > 0:  # the pericardium's bright line, then the echo-free effusion inside
          image[ellipse(cx, cy, rx + fluid + _PERICARDIUM, ry + fluid + _PERICARDIUM)] = 0.9
          image[ellipse(cx, cy, rx + fluid, ry + fluid)] = 0.04
        else:
          image[ellipse(cx, cy, rx + wall + _PERICARDIUM, ry + wall + _PERICARDIUM)] = 0.9
        image[ellipse(cx, cy, rx + wall, ry + wall)] = tissue + 0.25  # bright myocardium
      elif name == "LA":
        s = la_scale * (1 + 0.1 * contraction)
        rx, ry = rx * s, ry * s
      image[ellipse(cx, cy, rx, ry)] = 0.06  # blood: dark
    speckle = 0.5 * persistent + 0.5 * rng.rayleigh(0.6, (height, width)).astype(np.float32)
    gray = np.clip(image * speckle * (1 - 0.35 * r) * 255, 0, 255)
    frame = np.repeat(gray[..., None], 3, -1)
    if color and view in DOPPLER_VIEWS:
      jet = ellipse(0.0, 0.55, 0.08, 0.15)
      strength = math.sin(math.pi * phase)
      frame[jet] = [200 * strength + 40, 40, 255 * (1 - strength) + 40]
    frame[~sector] = 0
    video[t] = frame.astype(np.uint8)
    if t == 0:
      header = _header(study, view, height, width, sector)
    _burn_in(video[t], header, t, fps, cycle, phase0, ~sector)
  return video, box


def _header(study: Study, view: str, height: int, width: int, sector: np.ndarray
            ) -> tuple[np.ndarray, np.ndarray]:
  """The burned-in header (PHI!) of a clip: name, ID and date top-left, the view label
  top-right -> (pixels (H, W, 3) uint8, where (H, W) bool).

  Drawn outside the scan sector only, as scanners do: at small frame sizes the header would
  otherwise run into the sector's apex, and no sector mask could remove it. Rendered once per
  clip (it does not change; text rendering was most of the generator's time)."""
  img = Image.new("RGB", (width, height))
  draw = ImageDraw.Draw(img)
  draw.text((3, 2), study.patient_name.replace("^", " "), fill=(230, 230, 230))
  draw.text((3, 12), f"{study.patient_id} {study.study_date}", fill=(230, 230, 230))
  draw.text((width - 70, 2), view[:10], fill=(200, 200, 120))
  pixels = np.asarray(img)
  return pixels, pixels.any(axis=-1) & ~sector


def _burn_in(frame: np.ndarray, header: tuple[np.ndarray, np.ndarray], t: int, fps: float,
             cycle: float, phase0: float, outside: np.ndarray) -> None:
  """The header, an ECG trace along the bottom and its moving cursor, all where `outside`
  (H, W) holds: outside the sector, as scanners draw them (at small frame sizes the trace's
  row crosses the sector's arc, where it would read as image, and as colour)."""
  h, w = frame.shape[:2]
  pixels, where = header
  frame[where] = pixels[where]
  xs = np.arange(w)
  beat = ((xs / w * 2.0 + phase0) % 1.0)
  ys = np.clip((h - 12 - 8 * np.exp(-((beat - 0.3) / 0.015) ** 2)).astype(int), 0, h - 1)
  keep = outside[ys, xs]
  frame[ys[keep], xs[keep]] = (60, 220, 60)
  cursor = int((t / fps / (2.0 * cycle)) % 1.0 * (w - 1))
  rows = np.arange(h - 25, h - 2)
  rows = rows[outside[rows, cursor]]
  frame[rows, cursor] = (255, 255, 0)


_ENCODINGS = (("jpeg_baseline", True), ("rle", True), ("explicit_le", True), ("explicit_le", False))


def write_archive(out: str, studies: int, seed: int, frames: int = 24, size: tuple[int, int] = (192, 256),
                  still_fraction: float = 0.25, progress: bool = True) -> list[Study]:
  """Writes the archive described in the module docstring; returns the ground truth."""
  rng = np.random.default_rng(seed)
  os.makedirs(os.path.join(out, "dicom"), exist_ok=True)
  truth, video_rows = [], []
  iterator = range(studies)
  if progress:
    from tqdm import tqdm
    iterator = tqdm(iterator, desc="synthetic studies", unit="study")
  for i in iterator:
    study = make_study(rng, i)
    study_dir = os.path.join(out, "dicom", f"study_{i:05d}")
    os.makedirs(study_dir, exist_ok=True)
    for k, view in enumerate(study.views):
      encoding, color = _ENCODINGS[int(rng.integers(len(_ENCODINGS)))]
      if view in DOPPLER_VIEWS:
        encoding, color = ("jpeg_baseline" if rng.random() < 0.5 else "rle"), True
      fps = float(rng.choice([25.0, 30.0, 50.0]))
      video, box = render_clip(rng, study, view, frames, fps, *size, color=color)
      data = video if color else np.ascontiguousarray(video[..., 0])
      path = os.path.join(study_dir, f"{k:02d}.dcm")
      dicom_writer.write_us_dicom(
          path, data, encoding, fps=fps, regions=[box], patient_name=study.patient_name,
          patient_id=study.patient_id, study_uid=study.study_uid,
          series_uid=f"{study.study_uid}.{k + 1}", sop_uid=f"{study.study_uid}.{k + 1}.1",
          study_date=study.study_date,
          accession=f"ACC{study.index:06d}")
      video_rows.append({"file": os.path.relpath(path, out), "study_index": i, "view": view,
                         "encoding": encoding, "color": color, "frames": frames, "fps": fps})
    if rng.random() < still_fraction:
      view = str(rng.choice(COARSE_VIEWS))
      video, box = render_clip(rng, study, view, 1, 30.0, *size, color=True)
      path = os.path.join(study_dir, "still.dcm")
      dicom_writer.write_us_dicom(path, video, "explicit_le", regions=[box], still=True,
                                  patient_name=study.patient_name, patient_id=study.patient_id,
                                  study_uid=study.study_uid, study_date=study.study_date,
                                  series_uid=f"{study.study_uid}.99", sop_uid=f"{study.study_uid}.99.1")
      video_rows.append({"file": os.path.relpath(path, out), "study_index": i, "view": view,
                         "encoding": "explicit_le", "color": True, "frames": 1, "fps": ""})
    truth.append(study)
  with open(os.path.join(out, "reports.csv"), "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(["StudyInstanceUID", "report"])
    for s in truth:
      writer.writerow([s.study_uid, report_text(s)])
  with open(os.path.join(out, "ground_truth.csv"), "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(["study_index", "StudyInstanceUID", "lvef", *FINDINGS])
    for s in truth:
      writer.writerow([s.index, s.study_uid, f"{s.lvef:.1f}", *(s.findings[k] for k in FINDINGS)])
  with open(os.path.join(out, "videos.csv"), "w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=list(video_rows[0]))
    writer.writeheader()
    writer.writerows(video_rows)
  return truth


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog="python -m data_prep.synthetic", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--out", required=True, help="output directory (created)")
  parser.add_argument("--studies", type=int, default=20, help="number of studies (default 20)")
  parser.add_argument("--seed", type=int, default=0, help="random seed; same seed, same files")
  parser.add_argument("--frames", type=int, default=24, help="frames per clip (default 24)")
  parser.add_argument("--height", type=int, default=192, help="frame height in pixels")
  parser.add_argument("--width", type=int, default=256, help="frame width in pixels")
  parser.add_argument("--still-fraction", type=float, default=0.25,
                      help="fraction of studies that also get a still image (default 0.25)")
  args = parser.parse_args(argv)
  write_archive(args.out, args.studies, args.seed, args.frames, (args.height, args.width),
                args.still_fraction)
  print(f"wrote {args.studies} studies to {args.out}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
