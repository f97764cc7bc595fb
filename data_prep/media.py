"""One entry point for every input file, DICOM or video: the reader is chosen by the file's
content (`video_reader.sniff`), never its extension alone.

  info = media.read_info(path)            # dicom_reader.DicomInfo, for DICOM and video alike
  for frame in media.iter_frames(info):   # (H, W) grey or (H, W, 3) RGB uint8
"""

from __future__ import annotations

from typing import Iterator

import numpy as np

from data_prep import dicom_reader, video_reader
from data_prep.dicom_reader import DicomInfo, DicomReadError


def read_info(path: str, fallback_fps: float = 30.0) -> DicomInfo:
  """The header of a DICOM file or a video file. Raises DicomReadError (file and reason)."""
  if video_reader.sniff(path):
    return video_reader.read_info(path, fallback_fps)
  if video_reader.has_video_extension(path) and not _has_dicom_preamble(path):
    raise DicomReadError(f"{path}: not a video file (its name says video; its content is "
                         "neither AVI, MP4 / MOV, MKV / WebM nor DICOM)")
  return dicom_reader.read_info(path, fallback_fps)


def iter_frames(info: DicomInfo, max_frames: int | None = None, reduce: int = 1
                ) -> Iterator[np.ndarray]:
  """Decoded frames (see `dicom_reader.iter_frames`; videos ignore `reduce`)."""
  if video_reader.is_video(info):
    return video_reader.iter_frames(info, max_frames)
  return dicom_reader.iter_frames(info, max_frames, reduce)


def _has_dicom_preamble(path: str) -> bool:
  try:
    with open(path, "rb") as f:
      return f.read(132)[128:132] == b"DICM"
  except OSError:
    return False
