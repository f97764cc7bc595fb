"""An adversarial PHI corpus for `python -m data_prep.convert`, built at test time.

Planted PHI: burned-in text (white and coloured) everywhere in a frame that is not the imaging
sector (region corners outside the fan, Doppler / M-mode strips, margins), patient headers,
report text, odd UIDs, patient-named folders and files. Nothing is checked in.

Pixels are checked with a differential twin: each layout is built twice from one seed, once
`planted` (text drawn, strip content A) and once clean (no text, strip content B), with the same
UIDs, relative paths and key; both are converted losslessly (PNG) and every stored frame of the
two must be bit-identical. A planted pixel inside the stored mask makes the twins differ.
Strings are checked by `find_phi`: every output file's bytes and name, parquet cells, JSON text,
shard records' text fields and the converter's stdout/stderr.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Iterable

import numpy as np
import pydicom
from PIL import Image, ImageDraw
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import generate_uid
from scipy import ndimage

from data_prep import deid, dicom_writer

ROOT = Path(__file__).resolve().parents[2]

# ------------------------------------------------------------------------------ planted PHI

PATIENT_NAME, PATIENT_ID, ACCESSION, STUDY_DATE = "DOE^JOHN", "00123456", "A99887766", "20240304"
BIRTH_DATE = "19500101"  # dicom_writer.us_dataset writes it
HEADER_PHI = (PATIENT_NAME, "DOE", "JOHN", PATIENT_ID, ACCESSION, STUDY_DATE, BIRTH_DATE)
PIXEL_PHI = ("DOE^JOHN", "MRN 00123456", "03/04/2024", "BAPTIST MED CTR", "HR 72 bpm")
COLOURS = {"white": (255, 255, 255), "yellow": (255, 255, 0), "green": (0, 255, 0),
           "red": (255, 0, 0), "cyan": (0, 255, 255)}

ODD_UIDS = {
    "uid-names": "1.2.840.DOE.JOHN.19700101",
    "uid-leading-zero": "2.25.0123456789",
    "uid-70-chars": "1.2.840.113619.2.55.3.604688119.969.1712345678.123.9876543210.24681357",
}
ODD_UID_PHI = (*ODD_UIDS.values(), "19700101", "0123456789", "1712345678.123.9876543210",
               "9876543210.24681357")

REPORT_WITH_PHI = (
    "ACME HEART CENTER\n"
    "Patient: DOE, JOHN  DOB: 01/02/1950  MRN: 00123456\n"
    "Left Ventricle: Normal size and systolic function. LVEF 55%.\n"
    "Mitral Valve: Trace mitral regurgitation.\n"
    "Pericardium: No effusion. Discussed with Dr. Xavier Quinn on 03/04/2024 at 14:05.\n"
    "Questions: call 555-867-5309. Accession A99887766.\n"
    "Electronically signed by John A. Roberts, MD on 2024-03-05\n")
REPORT_CLEAN = ("Left Ventricle: Normal size. LVEF 55%.\n"
                "Mitral Valve: Trace mitral regurgitation.\n"
                "Aortic Valve: Trileaflet, no stenosis.\n")
REPORT_ORPHAN = "Patient: SMITH, JANE  MRN: 00765432\nLeft Ventricle: LVEF 60%.\n"
# "at 14:05", not "14:05": the converter's log timestamps may hold "14:05" by chance.
REPORT_PHI = ("ACME HEART CENTER", "Patient: DOE, JOHN", "DOE, JOHN", "01/02/1950", "00123456",
              "Dr. Xavier Quinn", "Xavier", "Quinn", "03/04/2024", "at 14:05", "555-867-5309",
              "867-5309", "A99887766", "John A. Roberts", "Roberts", "2024-03-05",
              "SMITH, JANE", "00765432")
CLINICAL = ("LVEF 55%", "Trace mitral regurgitation")
REDACTION_KINDS = ("header", "footer", "name", "date", "time", "phone", "id")

NAME_PHI = ("DOE^JOHN", "DOE", "JOHN", "SMITH", "JANE", "SMITH^JANE", "JOHN_DOE", "JANE_SMITH",
            "19700101", "19600101", "1960-01-01", "00123456", "MRN00123456", "DOB19600101",
            "Smith, Jane")


def variants(needle: str) -> set[str]:
  """A planted string as it may reappear: ^ as space / underscore / comma, any case."""
  forms = {needle, needle.replace("^", " "), needle.replace("^", "_"), needle.replace("^", ", "),
           needle.replace("^", "")}
  return {f for form in forms for f in (form, form.upper(), form.lower())}


def _pattern(needle: str) -> re.Pattern:
  """Case-insensitive; short needles ("DOE") only as whole tokens, so "does" is no hit."""
  body = re.escape(needle)
  if len(needle) < 6:
    body = r"(?<![A-Za-z0-9])" + body + r"(?![A-Za-z0-9])"
  return re.compile(body, re.IGNORECASE)


# ------------------------------------------------------------------------------ finding PHI


@functools.cache
def _codec():
  from data_prep import record_schema
  return record_schema.Codec()


@functools.lru_cache(maxsize=8)
def shard_records(path: Path) -> list[dict]:
  """Every record of one ArrayRecord shard, decoded (cached: shards are final)."""
  from array_record.python.array_record_module import ArrayRecordReader
  reader = ArrayRecordReader(str(path))
  try:
    n = reader.num_records()
    return [_codec().decode(raw) for raw in (reader.read(list(range(n))) if n else [])]
  finally:
    reader.close()


def _text_of(value) -> str:
  if isinstance(value, bytes):
    return value.decode("utf-8", "replace")
  if isinstance(value, (list, tuple)):
    return " ".join(_text_of(v) for v in value)
  if isinstance(value, np.ndarray):
    return " ".join(_text_of(v) for v in value.ravel().tolist())
  return str(value)


_SHARD = re.compile(r".+\.array_record-\d+-of-\d+")


def output_texts(out_dir: Path) -> dict[str, str]:
  """{where: text} for everything under out_dir that holds text: file names, parquet cells,
  UTF-8 files (JSON, JSONL), shard records' non-frame fields."""
  import pyarrow.parquet as pq
  texts = {}
  for path in sorted(Path(out_dir).rglob("*")):
    rel = str(path.relative_to(out_dir))
    texts[f"name:{rel}"] = rel
    if not path.is_file():
      continue
    if path.suffix == ".parquet":
      table = pq.read_table(path).to_pylist()
      texts[f"cells:{rel}"] = "\n".join(_text_of(v) for row in table for v in row.values())
      texts[f"columns:{rel}"] = " ".join(table[0]) if table else ""
    elif _SHARD.fullmatch(path.name):
      texts[f"records:{rel}"] = "\n".join(
          _text_of(v) for rec in shard_records(path) for k, v in rec.items() if k != "frames")
    else:
      try:
        texts[f"text:{rel}"] = path.read_bytes().decode("utf-8")
      except UnicodeDecodeError:
        pass
  return texts


def find_phi(out_dir: Path | None, texts: dict[str, str] | Iterable[str],
             planted: Iterable[str]) -> list[tuple[str, str]]:
  """[(where, needle)] for every planted string (or variant) found in any output byte, output
  text (see `output_texts`) or one of `texts` ({label: text}, e.g. stdout and stderr, or a
  list). Needles of 6+ characters are also searched in every file's raw bytes; shorter ones
  only in text (they would hit random binary)."""
  needles = sorted({v for p in planted for v in variants(p)})
  patterns = {n.lower(): _pattern(n) for n in needles}  # case-insensitive: one per spelling
  haystacks = dict(texts) if isinstance(texts, dict) else {
      f"text[{i}]": t for i, t in enumerate(texts)}
  hits = []
  if out_dir is not None:
    haystacks.update(output_texts(Path(out_dir)))
    for path in sorted(Path(out_dir).rglob("*")):
      if path.is_file():
        blob = path.read_bytes()
        hits += [(f"bytes:{path.relative_to(out_dir)}", n) for n in needles
                 if len(n) >= 6 and n.encode() in blob]
  for where, text in haystacks.items():
    hits += [(where, n) for n, p in patterns.items() if p.search(text)]
  return sorted(set(hits))


def assert_no_phi(out_dir: Path | None, texts: dict[str, str] | Iterable[str],
                  planted: Iterable[str]) -> None:
  """Fails naming every place a planted string survives (see `find_phi`)."""
  hits = find_phi(out_dir, texts if isinstance(texts, dict) else list(texts), planted)
  assert not hits, "planted PHI survives: " + "; ".join(f"{n!r} in {w}" for w, n in hits[:40])


# ------------------------------------------------------------------------------ pixels


def cone(shape: tuple[int, int], apex: tuple[int, int], radius: float, half_angle: float
         ) -> np.ndarray:
  """(H, W) bool scan sector: apex (x, y) at the top, opening downwards."""
  yy, xx = np.mgrid[:shape[0], :shape[1]]
  dy, dx = yy - apex[1], xx - apex[0]
  return (np.hypot(dx, dy) < radius) & (np.abs(np.arctan2(dx, dy)) < half_angle)


def text_mask(shape: tuple[int, int], xy: tuple[int, int], text: str, font_size: int = 14
              ) -> np.ndarray:
  """(H, W) bool pixels of `text` drawn at xy with Pillow's default font."""
  image = Image.new("L", (shape[1], shape[0]), 0)
  draw = ImageDraw.Draw(image)
  x0, y0, x1, y1 = draw.textbbox(xy, text, font_size=font_size)
  assert 0 <= x0 and 0 <= y0 and x1 <= shape[1] and y1 <= shape[0], (text, xy, "off the frame")
  draw.text(xy, text, fill=255, font_size=font_size)
  return np.asarray(image) > 100


def scrolling_strip(seed: int, frames: int, h: int, w: int, kind: str = "spectral",
                    shift: int = 6) -> np.ndarray:
  """(T, h, w) uint8 Doppler spectrum ("spectral") or M-mode trace ("mmode") scrolling left by
  `shift` px per frame: every pixel changes, more than a fan's speckle."""
  rng = np.random.default_rng(seed)
  cw = w + shift * frames
  canvas = rng.integers(10, 90, (h, cw)).astype(np.float32)
  x = np.arange(cw)
  yy = np.arange(h)[:, None]
  period, phase = rng.uniform(30, 60), rng.uniform(0, 2 * np.pi)
  if kind == "spectral":  # a bright envelope above a baseline, filled like a PW spectrum
    base = 0.85 * h
    top = base - (0.15 + 0.65 * np.abs(np.sin(np.pi * x / period + phase))) * base
    canvas = np.where((yy > top) & (yy < base), canvas + 120, canvas)
    canvas = np.where(np.abs(yy - top) < 2, 255, canvas)
  else:  # M-mode: tissue lines moving up and down over the sweep
    for k in range(4):
      line = h * (0.15 + 0.22 * k) + 0.08 * h * np.sin(2 * np.pi * x / period + phase + k)
      canvas = np.where(np.abs(yy - line) < 3, 240, canvas)
  canvas = np.clip(canvas, 0, 255).astype(np.uint8)
  return np.stack([canvas[:, t * shift:t * shift + w] for t in range(frames)])


@dataclasses.dataclass(frozen=True)
class Text:
  """Burned-in text; "{t}" in it is the frame index (a ticking clock or heart rate, which a
  static-overlay filter does not catch)."""
  text: str
  xy: tuple[int, int]
  colour: str = "white"
  where: str = "outside"  # "outside" / "edge": >= MARGIN / EDGE px from the fan; "inside"
  font_size: int = 14


MARGIN = 6  # px between planted text and the fan (sector edges, resampling footprints)
EDGE = 2  # text hugging the fan's edge, as depth scales and labels do


@dataclasses.dataclass(frozen=True)
class Expect:
  """What the spec says happens to a layout: allowed statuses, region_source when converted,
  text the reason holds when rejected (at its start when `reason_start`)."""
  statuses: tuple[str, ...]
  source: str | None = None
  reason: str | None = None
  reason_start: bool = False


@dataclasses.dataclass(frozen=True)
class Layout:
  """One clip layout; `frames(planted)` builds either twin (same fan, same UIDs)."""
  name: str
  expect: Expect
  shape: tuple[int, int] = (220, 320)
  fan: tuple | None = ((160, 8), 150, 0.6)  # (apex, radius, half angle) or None
  regions: tuple = ()  # (x0, y0, x1, y1, RegionSpatialFormat, RegionDataType)
  strip: tuple | None = None  # (x0, y0, x1, y1, "spectral" | "mmode"), scrolling
  texts: tuple[Text, ...] = ()
  rgb: bool = False
  still: bool = False
  static: bool = False  # one frozen frame repeated: no motion anywhere
  central: tuple | None = None  # (x0, y0, x1, y1): text must stay out of this box
  frames_n: int = 10
  seed: int = 0
  study_uid: str | None = None

  @property
  def relpath(self) -> str:
    return f"clips/{self.name}.dcm"

  def uid(self, kind: str) -> str:
    if kind == "study" and self.study_uid:
      return self.study_uid
    return generate_uid(entropy_srcs=["phi-corpus", self.name, kind])

  def fan_mask(self) -> np.ndarray:
    if self.fan is None:
      return np.zeros(self.shape, bool)
    return cone(self.shape, *self.fan)

  def frames(self, planted: bool) -> np.ndarray:
    """(T, H, W) or (T, H, W, 3) uint8; planted: text drawn and strip content A, else no text
    and strip content B."""
    h, w = self.shape
    n = 1 if self.still else self.frames_n
    rng = np.random.default_rng(self.seed)
    fan = self.fan_mask()
    video = np.zeros((n, h, w), np.uint8)
    for t in range(n):
      if t == 0 or not self.static:
        speckle = rng.integers(30, 200, (h, w), dtype=np.uint8)
      video[t][fan] = speckle[fan]
    if self.strip is not None:
      x0, y0, x1, y1, kind = self.strip
      video[:, y0:y1 + 1, x0:x1 + 1] = scrolling_strip(
          1000 + 2 * self.seed + planted, n, y1 - y0 + 1, x1 - x0 + 1, kind)
    if self.rgb:
      video = np.repeat(video[..., None], 3, axis=-1)
    if planted:
      for text in self.texts:
        colour = COLOURS[text.colour]
        for t in range(n) if "{t}" in text.text else [None]:
          mask = self.check_text(text, t or 0)
          video[slice(None) if t is None else t, mask] = colour if self.rgb else max(colour)
    return video

  def check_text(self, text: Text, t: int = 0) -> np.ndarray:
    """The text's mask in frame t, after checking it lies where the layout says (a test of
    the test)."""
    mask = text_mask(self.shape, text.xy, text.text.format(t=t), text.font_size)
    fan = self.fan_mask()
    if text.where == "inside":
      assert not (mask & ~ndimage.binary_erosion(fan, iterations=MARGIN)).any(), text
    elif fan.any():
      gap = ndimage.distance_transform_edt(~fan)[mask].min()
      assert gap >= (EDGE if text.where == "edge" else MARGIN), (text, gap)
    if self.central is not None:
      x0, y0, x1, y1 = self.central
      box = np.zeros(self.shape, bool)
      box[max(y0 - 4, 0):y1 + 5, max(x0 - 4, 0):x1 + 5] = True
      assert not (mask & box).any(), (text, "inside the central box")
    return mask


def set_regions(path: str, regions: Iterable[tuple]) -> None:
  """Rewrites a file's SequenceOfUltrasoundRegions: (x0, y0, x1, y1, spatial format, data
  type) items in the given order (1 = 2D, 2 = M-mode, 3 = spectral, 4 = waveform; data type 1
  tissue, 2 colour flow, 3 PW, 4 CW)."""
  ds = pydicom.dcmread(path)
  items = []
  for x0, y0, x1, y1, fmt, dtype in regions:
    item = Dataset()
    item.RegionSpatialFormat, item.RegionDataType, item.RegionFlags = fmt, dtype, 0
    item.RegionLocationMinX0, item.RegionLocationMinY0 = x0, y0
    item.RegionLocationMaxX1, item.RegionLocationMaxY1 = x1, y1
    if fmt == 1:
      item.PhysicalUnitsXDirection = item.PhysicalUnitsYDirection = 3  # cm
    else:  # time along x; cm (M-mode) or cm/s (Doppler) along y
      item.PhysicalUnitsXDirection, item.PhysicalUnitsYDirection = 4, 3 if fmt == 2 else 7
    item.PhysicalDeltaX = item.PhysicalDeltaY = 0.03
    items.append(item)
  if items:
    ds.SequenceOfUltrasoundRegions = DicomSequence(items)
  elif "SequenceOfUltrasoundRegions" in ds:
    del ds.SequenceOfUltrasoundRegions
  ds.save_as(path, enforce_file_format=True)


@contextlib.contextmanager
def lax_uid_writing():
  """pydicom writes (and re-reads, silently) invalid UIDs (letters, leading zeros, > 64
  chars) inside this block."""
  settings = pydicom.config.settings
  old = settings.writing_validation_mode, settings.reading_validation_mode
  settings.writing_validation_mode = settings.reading_validation_mode = pydicom.config.IGNORE
  try:
    yield
  finally:
    settings.writing_validation_mode, settings.reading_validation_mode = old


def write_layout(root: Path, layout: Layout, planted: bool, relpath: str | None = None,
                 **header) -> Path:
  """Writes one twin of a layout under root (uncompressed, lossless); returns its path."""
  path = Path(root) / (relpath or layout.relpath)
  path.parent.mkdir(parents=True, exist_ok=True)
  header = {"patient_name": PATIENT_NAME, "patient_id": PATIENT_ID, "accession": ACCESSION,
            "study_date": STUDY_DATE, "study_uid": layout.uid("study"),
            "series_uid": layout.uid("series"), "sop_uid": layout.uid("sop"), **header}
  with lax_uid_writing():
    dicom_writer.write_us_dicom(str(path), layout.frames(planted), fps=30.0,
                                still=layout.still, **header)
    if layout.regions:
      set_regions(str(path), layout.regions)
  return path


def uids_of(layouts: Iterable[Layout]) -> list[str]:
  return [layout.uid(k) for layout in layouts for k in ("study", "series", "sop")]


# ------------------------------------------------------------------------------ layouts

CONVERTED_DICOM = Expect(("converted",), "dicom")
CONVERTED_ESTIMATED = Expect(("converted",), "estimated")
NOT_FOUND = Expect(("rejected",), reason="sector not found", reason_start=True)
NO_2D = Expect(("rejected",), reason="no 2D image region")

REGION_2D = (40, 2, 279, 200, 1, 1)  # around the standard fan, with room for text in corners
OUTSIDE_FRAME = (84, 31, 595, 414, 1, 1)  # another matrix size's coordinates (23% inside)


def _corner_texts(colours=("white",) * 6) -> tuple[Text, ...]:
  """Text in the corners of REGION_2D outside the standard fan, left of it, and below the
  region (outside every region)."""
  spots = [("DOE^JOHN", (44, 6)), ("03/04/2024", (200, 6)), ("MRN 00123456", (44, 178)),
           ("HR 72 bpm", (205, 178)), ("BAPTIST MED CTR", (90, 204)), ("HR 72 bpm", (2, 100))]
  return tuple(Text(s, xy, c) for (s, xy), c in zip(spots, colours))


# Text 2-3 px from the standard fan's straight edges (a mask dilated by 2 px stores it), and a
# ticking clock.
EDGE_TEXTS = (Text("DOE^JOHN", (44, 50), where="edge"),
              Text("03/04/2024", (198, 50), "green", "edge"),
              Text("HR 72", (37, 120), "yellow", "edge"), Text("bpm 72", (245, 120), where="edge"),
              Text("12:3{t}:0{t}", (44, 28), "cyan"))

DUPLEX_FAN = ((160, 6), 128, 0.6)
DUPLEX_2D = (40, 0, 280, 141, 1, 1)
DUPLEX_STRIP = (10, 148, 309, 219, 3, 3)  # PW spectral Doppler
DUPLEX_TEXTS = (Text("DOE^JOHN", (44, 4), "yellow"), Text("03/04/2024", (204, 4), "cyan"),
                Text("HR 72 bpm", (14, 150), "green"), Text("MRN 00123456", (200, 204), "red"),
                Text("BAPTIST MED CTR", (90, 224)), Text("HR 7{t} bpm", (42, 124), font_size=12))
MMODE_FAN = ((160, 4), 92, 0.55)
MMODE_2D = (60, 0, 260, 99, 1, 1)
MMODE_STRIP = (10, 108, 309, 219, 2, 1)  # M-mode, tissue
MMODE_TEXTS = (Text("DOE^JOHN", (64, 3)), Text("03/04/2024", (184, 3)),
               Text("HR 72 bpm", (14, 110)), Text("MRN 00123456", (200, 204)),
               Text("BAPTIST MED CTR", (90, 224)), Text("HR 7{t} bpm", (64, 22), font_size=12))
STRIP_TEXTS = (Text("DOE^JOHN", (4, 4)), Text("03/04/2024", (240, 4)),
               Text("HR 72 bpm", (14, 148)), Text("BAPTIST MED CTR", (90, 224)),
               Text("12:3{t}:0{t}", (4, 24)))
ONLY_STRIP_TEXTS = (Text("DOE^JOHN", (4, 4)), Text("03/04/2024", (240, 4)),
                    Text("HR 72 bpm", (14, 32)), Text("MRN 00123456", (10, 222)))


def main_layouts() -> list[Layout]:
  """Every pixel layout of the spec, converted with the default options (+ --keep-stills)."""
  wide = (240, 320)
  return [
      Layout("duplex-2d-first", CONVERTED_DICOM, wide, DUPLEX_FAN, (DUPLEX_2D, DUPLEX_STRIP),
             DUPLEX_STRIP[:4] + ("spectral",), DUPLEX_TEXTS, rgb=True, seed=1),
      Layout("duplex-strip-first", CONVERTED_DICOM, wide, DUPLEX_FAN, (DUPLEX_STRIP, DUPLEX_2D),
             DUPLEX_STRIP[:4] + ("spectral",), DUPLEX_TEXTS, seed=2),
      Layout("mmode", CONVERTED_DICOM, wide, MMODE_FAN, (MMODE_2D, MMODE_STRIP),
             MMODE_STRIP[:4] + ("mmode",), MMODE_TEXTS, seed=3),
      Layout("spectral-only", NO_2D, wide, None, ((10, 30, 309, 209, 3, 4),),
             (10, 30, 309, 209, "spectral"), ONLY_STRIP_TEXTS, seed=4),
      Layout("mmode-only", NO_2D, wide, None, ((10, 30, 309, 209, 2, 1),),
             (10, 30, 309, 209, "mmode"), ONLY_STRIP_TEXTS, seed=15),
      Layout("regions-outside-frame", CONVERTED_ESTIMATED, regions=(OUTSIDE_FRAME,),
             texts=_corner_texts() + EDGE_TEXTS, seed=5),
      Layout("no-region-strip", CONVERTED_ESTIMATED, wide, ((160, 6), 126, 0.6), (),
             (10, 146, 309, 219, "spectral"), STRIP_TEXTS, seed=6),
      Layout("static-no-region", NOT_FOUND, texts=_corner_texts(), static=True, seed=7),
      Layout("static-region", NOT_FOUND, regions=(REGION_2D,), texts=_corner_texts(),
             static=True, seed=8),
      Layout("region-text-grey", CONVERTED_DICOM, regions=(REGION_2D,),
             texts=_corner_texts() + EDGE_TEXTS, seed=9),
      Layout("region-text-colour", CONVERTED_DICOM, regions=(REGION_2D,),
             texts=_corner_texts(("yellow", "green", "red", "cyan", "yellow", "green"))
             + EDGE_TEXTS, rgb=True, seed=10),
      Layout("still-region", Expect(("converted", "rejected"), "dicom"), regions=(REGION_2D,),
             texts=_corner_texts(), still=True, seed=11),
      Layout("still-region-outside-frame", Expect(("converted", "rejected"), "estimated"),
             regions=(OUTSIDE_FRAME,), texts=_corner_texts(), still=True, seed=12),
      Layout("still-text-only", Expect(("rejected",)), fan=None, texts=_corner_texts(),
             still=True, seed=13),
  ]


# The sensitivity control: text INSIDE the fan must make the twins differ.
CONTROL = Layout("control-text-in-fan", CONVERTED_DICOM, regions=(REGION_2D,),
                 texts=(Text("CONTROL", (128, 92), "white", "inside"),), seed=14)


def central_layouts() -> list[Layout]:
  """Static clips for --uncertain-sector central-crop: text outside the middle half of the
  frame (220 x 320: x 80..239, y 55..164) or of the region (x 100..219, y 52..151)."""
  return [
      Layout("static-no-region", Expect(("converted",), "central"), texts=_corner_texts(),
             static=True, central=(80, 55, 239, 164), seed=7),
      Layout("static-region", Expect(("converted",), "central"), regions=(REGION_2D,),
             texts=_corner_texts(), static=True, central=(100, 52, 219, 151), seed=8),
  ]


def plain(name: str, seed: int, **kw) -> Layout:
  """A fan with motion and a 2D region around it, nothing planted in its pixels."""
  return Layout(name, CONVERTED_DICOM, regions=(REGION_2D,), seed=seed, **kw)


# ------------------------------------------------------------------------------ corpora


@dataclasses.dataclass
class Corpus:
  root: Path  # input folder
  planted: list[str]  # every PHI string planted anywhere in it
  layouts: dict[str, Layout] = dataclasses.field(default_factory=dict)
  reports: Path | None = None

  def files(self) -> list[str]:
    return sorted(str(p.relative_to(self.root)) for p in self.root.rglob("*") if p.is_file())


def write_layouts(root: Path, layouts: Iterable[Layout], planted: bool) -> Corpus:
  layouts = list(layouts)
  for layout in layouts:
    write_layout(root, layout, planted)
  return Corpus(Path(root), [*HEADER_PHI, *PIXEL_PHI, *uids_of(layouts)],
                {layout.name: layout for layout in layouts})


def write_reports_csv(path: Path, rows: dict[str, str]) -> Path:
  import csv
  with open(path, "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(["StudyInstanceUID", "report"])
    writer.writerows(rows.items())
  return path


def write_report_corpus(root: Path) -> Corpus:
  """Two plain clips: one study's report full of PHI, one clean; plus an orphan report."""
  layouts = [plain("report-phi", 20), plain("report-clean", 21)]
  corpus = write_layouts(root / "dicom", layouts, planted=False)
  corpus.reports = write_reports_csv(root / "reports.csv", {
      layouts[0].uid("study"): REPORT_WITH_PHI, layouts[1].uid("study"): REPORT_CLEAN,
      "1.2.3.4.5.6.7.8.9": REPORT_ORPHAN})
  corpus.planted += REPORT_PHI
  return corpus


def write_identifier_corpus(root: Path) -> Corpus:
  """Odd UIDs, patient-named folders and files, a corrupt file, a truncated clip, a note."""
  layouts = []
  for i, (name, uid) in enumerate(ODD_UIDS.items()):
    layout = plain(name, 30 + i, study_uid=uid)
    write_layout(root, layout, False, sop_uid=uid if name == "uid-names" else layout.uid("sop"))
    layouts.append(layout)
  named = plain("named", 40)
  write_layout(root, named, False, "DOE^JOHN_19700101/JOHN_DOE_MRN00123456.dcm")
  junk = np.random.default_rng(41).integers(0, 256, 4096, dtype=np.uint8).tobytes()
  (root / "DOE^JOHN_19700101" / "SMITH_JANE_DOB19600101.dcm").write_bytes(
      b"\0" * 128 + b"DICM" + junk)
  (root / "DOE^JOHN_19700101" / "DOE_JOHN_19700101_notes.txt").write_text(
      "Patient DOE^JOHN MRN 00123456 DOB 19700101\n")
  truncated = plain("truncated", 42)
  path = write_layout(root, truncated, False, "SMITH^JANE_19600101/JANE_SMITH_19600101.dcm",
                      patient_name="SMITH^JANE", patient_id="DOB19600101")
  path.write_bytes(path.read_bytes()[:len(path.read_bytes()) * 2 // 3])
  spaced = plain("spaced", 43)
  write_layout(root, spaced, False, "Smith, Jane 1960-01-01/echo JANE SMITH 1.dcm",
               patient_name="SMITH^JANE")
  layouts += [named, truncated, spaced]
  return Corpus(Path(root), [*HEADER_PHI, *ODD_UID_PHI, *NAME_PHI, *uids_of(layouts)],
                {layout.name: layout for layout in layouts})


# ------------------------------------------------------------------------------ converting


def file_key(relpath: str) -> str:
  """The converter's pseudonym of an input path (insecure test key)."""
  return deid.Pseudonymizer(deid.INSECURE_TEST_KEY)("file", relpath)


@dataclasses.dataclass
class Run:
  """One `python -m data_prep.convert` subprocess and what it left behind."""
  args: list[str]
  returncode: int
  stdout: str
  stderr: str
  input_dir: Path
  out_dir: Path

  @functools.cached_property
  def manifest(self) -> list[dict]:
    import pyarrow.parquet as pq
    return pq.read_table(self.out_dir / "manifest.parquet").to_pylist()

  @functools.cached_property
  def studies(self) -> list[dict]:
    import pyarrow.parquet as pq
    return pq.read_table(self.out_dir / "studies.parquet").to_pylist()

  def row(self, relpath: str) -> dict:
    key = file_key(relpath)
    rows = [r for r in self.manifest if r["file_key"] == key]
    assert len(rows) == 1, f"{len(rows)} manifest rows for one input file"
    return rows[0]

  def record(self, relpath: str) -> dict:
    row = self.row(relpath)
    assert row["status"] == "converted", row
    return shard_records(self.out_dir / row["shard"])[int(row["record_index"])]

  def video(self, relpath: str) -> np.ndarray:
    from data_prep import record_schema
    return record_schema.decode_frames(self.record(relpath))

  def study(self, study_uid: str) -> dict:
    sid = deid.Pseudonymizer(deid.INSECURE_TEST_KEY).study(study_uid)
    rows = [s for s in self.studies if s["study_id"] == sid]
    assert len(rows) == 1, f"{len(rows)} studies.parquet rows for one study"
    return rows[0]

  @property
  def log(self) -> str:
    return self.stdout + self.stderr


def run_convert(input_dir: Path, out_dir: Path, *flags: str, workers: int = 1,
                timeout: int = 300) -> Run:
  """The converter CLI in a subprocess (insecure test key, 64 px, lossless PNG frames)."""
  args = [sys.executable, "-m", "data_prep.convert", "--input", str(input_dir), "--output",
          str(out_dir), "--insecure-test-key", "--size", "64", "--workers", str(workers),
          "--frame-format", "png", *flags]
  env = {k: v for k, v in os.environ.items() if k not in (deid.KEY_ENV, "XLA_FLAGS")}
  proc = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, timeout=timeout)
  decode = lambda b: b.decode("utf-8", "replace")  # noqa: E731
  return Run(args, proc.returncode, decode(proc.stdout), decode(proc.stderr), Path(input_dir),
             Path(out_dir))


def describe(run: Run) -> str:
  """The end of a run's stderr, for assertion messages."""
  return f"exit {run.returncode}; stderr tail:\n{run.stderr[-3000:]}"


def frames_differ(a: np.ndarray, b: np.ndarray) -> str:
  """'' when bit-identical, else what differs."""
  if a.shape != b.shape:
    return f"shapes {a.shape} vs {b.shape}"
  diff = a != b
  if not diff.any():
    return ""
  frames = np.nonzero(diff.reshape(len(a), -1).any(1))[0]
  return (f"{int(diff.sum())} values differ in frames {frames.tolist()} "
          f"(max |d| {int(np.abs(a.astype(int) - b).max())})")


def json_counts(text: str) -> dict[str, int]:
  return {str(k): int(v) for k, v in (json.loads(text) if text else {}).items()}
