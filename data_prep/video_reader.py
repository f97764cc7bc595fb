"""Echo video files (AVI, MP4 / MOV, MKV / WebM) read like DICOM clips: the same header record
(`dicom_reader.DicomInfo`) and the same frame iterator, so the rest of data prep (sector mask,
crop, resize, manifest, de-identification) treats both alike.

Decoded with PyAV (FFmpeg's decoders in a wheel): it reads the frame rate and frame count from
the container and raises on damaged data, where OpenCV's reader returns fewer frames in silence.
Files are recognised by their content, never their extension: an AVI named `.dcm` is read as a
video, and a file named `.mp4` that holds no video is rejected as such.

Privacy: a video container carries no patient identifiers data prep uses, and none of its
metadata (title, comment, creation time, encoder) is read or kept; the study a video belongs to
comes from its place in the archive (`convert`), through the keyed pseudonyms. Error messages
quote FFmpeg's error class, never its text (which can hold the path).
"""

from __future__ import annotations

import os
from typing import Iterator

import numpy as np

from data_prep.dicom_reader import DicomInfo, DicomReadError

SYNTAX_PREFIX = "video/"  # DicomInfo.transfer_syntax of a video file: "video/<codec>"
EXTENSIONS = (".avi", ".mp4", ".m4v", ".mov", ".mkv", ".webm")


def sniff(path: str) -> str:
  """"avi", "mp4" (ISO base media: MP4 / MOV / M4V), "mkv" (Matroska / WebM) or "" from the
  file's first bytes."""
  try:
    with open(path, "rb") as f:
      head = f.read(16)
  except OSError:
    return ""
  if head[:4] == b"RIFF" and head[8:12] in (b"AVI ", b"AVIX"):
    return "avi"
  if head[4:8] in (b"ftyp", b"moov", b"mdat", b"free", b"wide", b"skip"):
    return "mp4"
  if head[:4] == b"\x1a\x45\xdf\xa3":
    return "mkv"
  return ""


def has_video_extension(path: str) -> bool:
  return path.lower().endswith(EXTENSIONS)


def is_video(info: DicomInfo) -> bool:
  return info.transfer_syntax.startswith(SYNTAX_PREFIX)


def _open(path: str):
  import av
  try:
    return av.open(path, metadata_errors="ignore")
  except Exception as e:  # FFmpeg's error text names the file: only its class is quoted
    raise DicomReadError(f"{path}: cannot open the video ({type(e).__name__}; damaged or not "
                         "a video file)") from None


def read_info(path: str, fallback_fps: float = 30.0) -> DicomInfo:
  """The container's header: size, frame count and rate, codec (no frame decoded). Raises
  DicomReadError naming the file and the reason."""
  if not os.path.isfile(path):
    raise DicomReadError(f"{path}: no such file")
  kind = sniff(path)
  if not kind:
    raise DicomReadError(f"{path}: not a video file (neither AVI, MP4 / MOV nor MKV / WebM)")
  with _open(path) as container:
    if not container.streams.video:
      raise DicomReadError(f"{path}: the {kind.upper()} file holds no video stream")
    stream = container.streams.video[0]
    rate = stream.average_rate or stream.base_rate
    fps, source = (float(rate), "container") if rate and float(rate) > 0 else \
        (fallback_fps, "fallback")
    frames = int(stream.frames or 0)
    if frames <= 0 and stream.duration and stream.time_base:  # some MKVs omit the count
      frames = int(round(float(stream.duration * stream.time_base) * fps))
    return DicomInfo(
        path=path, sop_class_uid="", modality="US", photometric="RGB",
        transfer_syntax=SYNTAX_PREFIX + str(stream.codec_context.name), rows=int(stream.height),
        columns=int(stream.width), num_frames=frames, samples_per_pixel=3, bits_allocated=8,
        bits_stored=8, fps=fps, fps_source=source, regions=(), identifiers={})


def iter_frames(info: DicomInfo, max_frames: int | None = None) -> Iterator[np.ndarray]:
  """Decoded frames, one at a time, (H, W, 3) uint8 RGB (colour converted once, by FFmpeg).

  Raises DicomReadError when the data cannot be decoded or ends before the container's frame
  count (a truncated file): a clip shorter than its header says is refused, as for DICOM.
  """
  count = info.num_frames if max_frames is None else min(info.num_frames, max_frames)
  produced = 0
  with _open(info.path) as container:
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    try:
      for frame in container.decode(stream):
        if produced >= count:
          break
        yield frame.to_ndarray(format="rgb24")
        produced += 1
    except DicomReadError:
      raise
    except Exception as e:  # FFmpeg's text may hold the path: only the class is quoted
      raise DicomReadError(f"{info.path}: cannot decode the video after {produced} frames "
                           f"({type(e).__name__}; the file is damaged)") from None
  if produced < count:
    raise DicomReadError(f"{info.path}: the video holds {produced} frames, its container says "
                         f"{info.num_frames} (truncated?)")
