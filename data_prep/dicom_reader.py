"""Read one ultrasound DICOM file: header facts, frame timing, and RGB frames in bounded memory.

The same function serves data prep (whole archives) and `interpret` (one study), so every
frame any part of the system sees went through one colour path.

Colour, exactly once: pixels are decoded by pydicom (>= 3) with `as_rgb=True`, which returns
RGB for every YCbCr interpretation: YBR_FULL / YBR_FULL_422 (converted by pydicom, or by the
JPEG decoder itself for JPEG data; pydicom knows which) and YBR_RCT / YBR_ICT (inverted by the
JPEG 2000 decoder). We never convert YBR ourselves: a second conversion is EchoPrime's "green
tint". PALETTE COLOR goes through its LUT; MONOCHROME1 is inverted; grayscale stays one channel
until `to_rgb`.

Frame timing, first match wins (documented order):
  1. FrameTime (0018,1063), ms per frame
  2. FrameTimeVector (0018,1065), mean of the per-frame increments (first entry is 0)
  3. CineRate (0018,0040), frames/s
  4. RecommendedDisplayFrameRate (0008,2144), frames/s
  5. the caller's fallback (`fallback_fps`), recorded as such.

Bounded memory: frames come one at a time, reading one frame's bytes (or one encapsulated
frame's fragments) per step, so a 1,000-frame 1024x768 clip never has to exist decoded in RAM at
once. (Deflated files are the exception: they are inflated in memory first.)

Decoders: 8-bit JPEG baseline/extended (what most echo carts write) is decoded by Pillow's
libjpeg-turbo straight from the encapsulated frames: YCbCr->RGB happens inside libjpeg (the one
conversion), and `reduce` asks libjpeg to decode at 1/2, 1/4 or 1/8 size in the DCT, which is
what makes conversion to 224 px fast. Everything else goes through `pydicom.pixels.iter_pixels`
and its plugins (pylibjpeg, openjpeg, JPEG-LS, RLE), which ignore `reduce`.

This module reads PHI-bearing headers; it returns them only inside `DicomInfo.identifiers`,
which data prep hashes before anything is written. pydicom never gets to print them: every
pydicom call runs under `log_privacy.quiet_pydicom()` (no value validation on read, its logger
replaced by a fixed notice) and inside a warnings capture whose text is discarded; one DEBUG
line per call says how many warnings of which categories were withheld. Error messages name
the file by path (callers replace it with a pseudonym) and carry pydicom's exception text only
through `log_privacy.redact`. NumPy/pydicom only, no JAX.

Kept in one file (~440 lines): one colour and memory path for every reader, on purpose (above).
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import io
import logging
import os
import warnings
from typing import Iterator

import numpy as np
import pydicom
from PIL import Image
from pydicom import encaps, pixels
from pydicom.errors import InvalidDicomError

from data_prep import log_privacy

log = logging.getLogger("data_prep.dicom_reader")

# SOP classes that hold ultrasound images.
US_MULTIFRAME = "1.2.840.10008.5.1.4.1.1.3.1"
US_IMAGE = "1.2.840.10008.5.1.4.1.1.6.1"
US_SOP_CLASSES = {US_MULTIFRAME, US_IMAGE,
                  "1.2.840.10008.5.1.4.1.1.3",  # retired US Multi-frame
                  "1.2.840.10008.5.1.4.1.1.6"}  # retired US Image

DEFLATED = "1.2.840.10008.1.2.1.99"
_PILLOW_JPEG = ("1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51")  # JPEG baseline, extended
GRAY = ("MONOCHROME1", "MONOCHROME2")
SUPPORTED_PHOTOMETRIC = GRAY + ("RGB", "YBR_FULL", "YBR_FULL_422", "YBR_RCT", "YBR_ICT",
                                "PALETTE COLOR")


# DICOM defined terms: only these are ever quoted in a message; any other value of the same
# attribute is free text that may hold anything (a name typed into the wrong field).
PHOTOMETRIC_TERMS = frozenset(SUPPORTED_PHOTOMETRIC + (
    "YBR_PARTIAL_422", "YBR_PARTIAL_420", "HSV", "ARGB", "CMYK", "XYB"))
MODALITY_TERMS = frozenset(
    "AR ASMT AU BDUS BI BMD CR CT CTPROTOCOL DG DOC DX ECG EPS ES FID GM HC HD IO IOL IVOCT "
    "IVUS KER KO LEN LS MG MR M3D NM OAM OCT OP OPM OPT OPTBSV OPTENF OPV OSS OT PLAN PR PT "
    "PX REG RESP RF RG RTDOSE RTIMAGE RTINTENT RTPLAN RTRAD RTRECORD RTSEGANN RTSTRUCT RWV SEG "
    "SM SMR SR SRF STAIN TEXTUREMAP TG US VA XA XC CD CF CP CS DD DF DM DS EC FA FS LP MA MS "
    "OPR ST VF".split())


def defined_term(value: str, terms: frozenset[str]) -> str:
  """`value` quoted if it is one of the attribute's defined terms, else a placeholder."""
  return repr(value) if value in terms else "<unrecognised value>"


class DicomReadError(ValueError):
  """A file that cannot be used; the message names the file and the reason."""


class _Withheld:
  """The warnings pydicom raised during one read, counted by category; their text is dropped
  (validation warnings quote raw element values: UIDs, names, dates)."""

  def __init__(self):
    self.counts: collections.Counter[str] = collections.Counter()

  @contextlib.contextmanager
  def capture(self) -> Iterator[None]:
    with warnings.catch_warnings(record=True) as caught:
      warnings.simplefilter("always")
      try:
        yield
      finally:
        self.counts.update(w.category.__name__ for w in caught)

  def report(self) -> None:
    """One line per read, no path (the caller knows the file only by pseudonym)."""
    n = sum(self.counts.values())
    if n:
      log.debug("pydicom raised %d warning%s (%s); their text is withheld because it can "
                "quote header values", n, "" if n == 1 else "s", ", ".join(sorted(self.counts)))


def _quietly(frames: Iterator[np.ndarray], withheld: _Withheld) -> Iterator[np.ndarray]:
  """`frames`, each step inside its own capture window. The window is never held open across a
  yield, so the caller's own warnings stay theirs and interleaved readers cannot tangle the
  global warning filters."""
  try:
    while True:
      with withheld.capture():
        try:
          frame = next(frames)
        except StopIteration:
          return
      yield frame
  finally:
    with withheld.capture():
      frames.close()


@dataclasses.dataclass(frozen=True)
class Region:
  """One entry of SequenceOfUltrasoundRegions, in pixel coordinates (x1, y1 inclusive)."""
  x0: int
  y0: int
  x1: int
  y1: int
  spatial_format: int  # 1 = 2D, 2 = M-mode, 3 = spectral, 4 = waveform, ...
  data_type: int  # 1 = tissue, 2 = colour flow, 3 = PW Doppler, ...

  @property
  def area(self) -> int:
    return max(self.x1 - self.x0 + 1, 0) * max(self.y1 - self.y0 + 1, 0)


@dataclasses.dataclass(frozen=True)
class DicomInfo:
  """What the header says; no pixel data. `identifiers` is PHI: hash it, never write it."""
  path: str
  sop_class_uid: str
  modality: str
  photometric: str
  transfer_syntax: str
  rows: int
  columns: int
  num_frames: int
  samples_per_pixel: int
  bits_allocated: int
  bits_stored: int
  fps: float
  fps_source: str
  regions: tuple[Region, ...]
  identifiers: dict[str, str]

  @property
  def is_ultrasound(self) -> bool:
    return self.sop_class_uid in US_SOP_CLASSES or self.modality == "US"

  @property
  def is_clip(self) -> bool:
    return self.num_frames > 1

  @property
  def is_color(self) -> bool:
    return self.photometric not in GRAY

  @property
  def duration_s(self) -> float:
    return self.num_frames / self.fps if self.fps > 0 else float("nan")

  def tissue_region(self) -> Region | None:
    """The 2D tissue region (largest if several); else the largest 2D region; else None."""
    two_d = [r for r in self.regions if r.spatial_format == 1]
    tissue = [r for r in two_d if r.data_type == 1] or two_d
    return max(tissue, key=lambda r: r.area) if tissue else None


def read_info(path: str, fallback_fps: float = 30.0) -> DicomInfo:
  """Parses the header (pixel data not read). Raises DicomReadError naming file and reason."""
  log_privacy.quiet_pydicom()
  withheld = _Withheld()
  try:
    with withheld.capture():
      return _read_info(path, fallback_fps)
  finally:
    withheld.report()


def _read_info(path: str, fallback_fps: float) -> DicomInfo:
  # Exception text from pydicom is redacted, and `from None` keeps the raw original out of
  # any traceback (its type is in the message).
  if not os.path.isfile(path):
    raise DicomReadError(f"{path}: no such file")
  try:
    ds = pydicom.dcmread(path, stop_before_pixels=True)
  except InvalidDicomError as e:
    raise DicomReadError(f"{path}: not a DICOM file ({_quote(e, path)})") from None
  except Exception as e:  # truncated or corrupt headers raise many exception types
    raise DicomReadError(f"{path}: unreadable DICOM header ({type(e).__name__}: "
                         f"{_quote(e, path)})") from None
  try:
    return _header(ds, path, fallback_fps)
  except DicomReadError:
    raise
  except Exception as e:  # values are converted lazily: a malformed one fails only here
    raise DicomReadError(f"{path}: malformed header value ({type(e).__name__}; the value "
                         "is not quoted)") from None


def _header(ds: pydicom.Dataset, path: str, fallback_fps: float) -> DicomInfo:
  meta = getattr(ds, "file_meta", None)
  ts = str(getattr(meta, "TransferSyntaxUID", "")) if meta is not None else ""
  fps, source = frame_rate(ds, fallback_fps)
  try:
    raw_frames = ds.get("NumberOfFrames")
    num_frames = 1 if raw_frames in (None, "") else int(raw_frames)
  except (TypeError, ValueError):  # the value itself is not quoted: it may be anything
    raise DicomReadError(f"{path}: invalid NumberOfFrames (not an integer)") from None
  return DicomInfo(
      path=path,
      sop_class_uid=str(ds.get("SOPClassUID", "")),
      modality=str(ds.get("Modality", "")),
      photometric=str(ds.get("PhotometricInterpretation", "")).strip(),
      transfer_syntax=ts,
      rows=int(ds.get("Rows", 0) or 0),
      columns=int(ds.get("Columns", 0) or 0),
      num_frames=num_frames,
      samples_per_pixel=int(ds.get("SamplesPerPixel", 1) or 1),
      bits_allocated=int(ds.get("BitsAllocated", 8) or 8),
      bits_stored=int(ds.get("BitsStored", ds.get("BitsAllocated", 8)) or 8),
      fps=fps,
      fps_source=source,
      regions=_regions(ds),
      identifiers={k: str(ds.get(k, "")) for k in
                   ("PatientID", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID",
                    "AccessionNumber")},
  )


def _quote(error: BaseException, path: str) -> str:
  """An exception's text, safe to embed in a message: no path, UID, date or name."""
  return log_privacy.redact(str(error), path)


def frame_rate(ds: pydicom.Dataset, fallback_fps: float) -> tuple[float, str]:
  """(frames per second, which attribute it came from); see the module docstring's order."""
  def positive(value) -> float | None:
    try:
      v = float(value)
    except (TypeError, ValueError):
      return None
    return v if np.isfinite(v) and v > 0 else None

  if (ft := positive(ds.get("FrameTime"))) is not None:
    return 1000.0 / ft, "FrameTime"
  vector = ds.get("FrameTimeVector")
  if vector is not None:
    try:
      steps = [float(v) for v in (vector if isinstance(vector, (list, tuple)) or
                                  hasattr(vector, "__iter__") else [vector])][1:]
    except (TypeError, ValueError):
      steps = []
    steps = [s for s in steps if s > 0]
    if steps:
      return 1000.0 / float(np.mean(steps)), "FrameTimeVector"
  for key in ("CineRate", "RecommendedDisplayFrameRate"):
    if (rate := positive(ds.get(key))) is not None:
      return rate, key
  return float(fallback_fps), "fallback"


def _regions(ds: pydicom.Dataset) -> tuple[Region, ...]:
  out = []
  for item in ds.get("SequenceOfUltrasoundRegions", []) or []:
    try:
      out.append(Region(int(item.RegionLocationMinX0), int(item.RegionLocationMinY0),
                        int(item.RegionLocationMaxX1), int(item.RegionLocationMaxY1),
                        int(item.get("RegionSpatialFormat", 0)),
                        int(item.get("RegionDataType", 0))))
    except (AttributeError, TypeError, ValueError):
      continue  # an incomplete region entry is ignored, not fatal
  return tuple(out)


def iter_frames(info: DicomInfo, max_frames: int | None = None, reduce: int = 1
                ) -> Iterator[np.ndarray]:
  """Decoded frames, one at a time: (H, W) uint8 for grayscale, (H, W, 3) uint8 RGB otherwise.

  reduce: 1, 2, 4 or 8. For 8-bit JPEG baseline/extended, frames are decoded at
  (ceil(H / reduce), ceil(W / reduce)) by libjpeg's DCT scaling; other syntaxes return full
  size. Callers that pass reduce > 1 read the scale off the frame shape.
  Raises DicomReadError (naming the file) if the pixel data cannot be decoded.
  """
  if info.photometric not in SUPPORTED_PHOTOMETRIC:
    raise DicomReadError(f"{info.path}: unsupported PhotometricInterpretation "
                         f"{defined_term(info.photometric, PHOTOMETRIC_TERMS)}")
  if reduce not in (1, 2, 4, 8):
    raise ValueError(f"reduce must be 1, 2, 4 or 8, got {reduce}")
  log_privacy.quiet_pydicom()
  withheld = _Withheld()
  try:
    yield from _quietly(_decoded(info, max_frames, reduce), withheld)
  finally:
    withheld.report()


def _decoded(info: DicomInfo, max_frames: int | None, reduce: int) -> Iterator[np.ndarray]:
  """`iter_frames` without the warnings capture: the fastest decoder first, then pydicom."""
  count = info.num_frames if max_frames is None else min(info.num_frames, max_frames)
  decoders = [lambda: _pydicom_frames(info, count)]
  if _libjpeg_direct(info):
    decoders.insert(0, lambda: _jpeg_frames(info, count, reduce))
  produced = 0
  for attempt, decoder in enumerate(decoders):
    try:
      for frame in decoder():
        yield frame
        produced += 1
      break
    except DicomReadError:
      raise
    except Exception as e:  # decoder errors come in many types; the caller records the reason
      if produced == 0 and attempt + 1 < len(decoders):
        continue  # nothing yielded yet: retry with the next decoder
      raise DicomReadError(f"{info.path}: cannot decode pixel data "
                           f"({type(e).__name__}: {_quote(e, info.path)})") from None
  if produced < count:
    raise DicomReadError(f"{info.path}: pixel data holds {produced} frames, header says "
                         f"{info.num_frames}")


def _pydicom_frames(info: DicomInfo, count: int) -> Iterator[np.ndarray]:
  """Any syntax pydicom's plugins can decode, with pydicom's colour handling (as_rgb)."""
  palette_ds = pydicom.dcmread(info.path, stop_before_pixels=True) \
      if info.photometric == "PALETTE COLOR" else None
  # Deflated files cannot be read frame by frame from disk: the whole dataset is inflated in
  # memory first (rare in echo archives; every other syntax streams from the file).
  src = pydicom.dcmread(info.path) if info.transfer_syntax == DEFLATED else info.path
  for frame in pixels.iter_pixels(src, indices=range(count), as_rgb=True):
    yield _to_uint8(frame, info, palette_ds)


def _libjpeg_direct(info: DicomInfo) -> bool:
  """8-bit JPEG baseline/extended in a photometric libjpeg can hand back as RGB or gray."""
  return (info.transfer_syntax in _PILLOW_JPEG and info.bits_stored == 8 and
          info.bits_allocated == 8 and info.num_frames >= 1 and
          info.photometric in GRAY + ("RGB", "YBR_FULL", "YBR_FULL_422"))


_PIXEL_DATA_TAG = b"\xe0\x7f\x10\x00"  # (7FE0,0010), little endian


def _jpeg_frames(info: DicomInfo, count: int, reduce: int) -> Iterator[np.ndarray]:
  """Encapsulated JPEG frames decoded by Pillow, one fragment set at a time from the file."""
  with open(info.path, "rb") as f:
    ds = pydicom.dcmread(f, stop_before_pixels=True)  # leaves f at the Pixel Data tag
    header = f.read(12)  # tag, VR "OB", 2 reserved bytes, undefined length (explicit VR LE)
    if header[:4] != _PIXEL_DATA_TAG or header[8:] != b"\xff\xff\xff\xff":
      raise ValueError("pixel data is not encapsulated")
    extended = None
    if "ExtendedOffsetTable" in ds and "ExtendedOffsetTableLengths" in ds:
      extended = (ds.ExtendedOffsetTable, ds.ExtendedOffsetTableLengths)
    frames = encaps.generate_frames(f, number_of_frames=info.num_frames,
                                    extended_offsets=extended)
    for _, data in zip(range(count), frames):
      frame = _decode_jpeg(data, info, reduce)
      yield 255 - frame if info.photometric == "MONOCHROME1" else frame


def _decode_jpeg(data: bytes, info: DicomInfo, reduce: int) -> np.ndarray:
  image = Image.open(io.BytesIO(data), formats=("JPEG",))
  if info.samples_per_pixel == 1:
    mode = "L"
  elif "adobe_transform" in image.info:
    mode = "RGB"  # the APP14 marker says whether a colour transform was applied; libjpeg obeys
  elif info.photometric == "RGB":
    mode = "YCbCr"  # components stored untransformed: ask libjpeg for them raw, they are RGB
  else:
    mode = "RGB"  # YBR_FULL(_422): libjpeg converts to RGB, the one conversion
  w, h = image.size
  image.draft(mode, (-(-w // reduce), -(-h // reduce)))
  if image.mode != mode:
    raise ValueError(f"libjpeg gave mode {image.mode}, expected {mode}")
  frame = np.asarray(image)
  if frame.ndim != (2 if mode == "L" else 3):
    raise ValueError(f"unexpected decoded shape {frame.shape}")
  return frame


def _to_uint8(frame: np.ndarray, info: DicomInfo, palette_ds) -> np.ndarray:
  if info.photometric == "PALETTE COLOR":
    frame = pixels.apply_color_lut(frame, palette_ds)
    if frame.dtype != np.uint8:  # 16-bit LUT entries -> 8 bits
      frame = (frame >> 8).astype(np.uint8) if frame.max() > 255 else frame.astype(np.uint8)
    return frame
  if frame.dtype != np.uint8 or info.bits_stored > 8:
    frame = _window_to_uint8(frame, info.bits_stored)
  if info.photometric == "MONOCHROME1":
    frame = 255 - frame
  return frame


def _window_to_uint8(frame: np.ndarray, bits_stored: int) -> np.ndarray:
  """Maps the stored value range [0, 2^bits - 1] (or the signed equivalent) to [0, 255].

  A fixed mapping from the header, not per-frame min/max, so brightness does not flicker
  between frames of one clip.
  """
  frame = frame.astype(np.float32)
  if frame.min() < 0:  # signed storage
    lo, hi = -(2.0 ** (bits_stored - 1)), 2.0 ** (bits_stored - 1) - 1
  else:
    lo, hi = 0.0, 2.0 ** bits_stored - 1
  return np.clip(np.round((frame - lo) * (255.0 / (hi - lo))), 0, 255).astype(np.uint8)


def to_rgb(frame: np.ndarray) -> np.ndarray:
  """(H, W) or (H, W, 3) uint8 -> (H, W, 3) uint8 (grayscale replicated)."""
  return np.repeat(frame[..., None], 3, axis=-1) if frame.ndim == 2 else frame


def read_video(path: str, max_frames: int | None = None, fallback_fps: float = 30.0
               ) -> tuple[DicomInfo, np.ndarray]:
  """Convenience for small files and tests: header + all frames as (T, H, W, 3) uint8 RGB."""
  info = read_info(path, fallback_fps)
  frames = [to_rgb(f) for f in iter_frames(info, max_frames)]
  if not frames:
    raise DicomReadError(f"{path}: no frames")
  return info, np.stack(frames)
