"""One study's folder (DICOM and / or AVI / MP4 files) -> its clips, through data prep's own
reader and preprocessing.

Every file goes through `data_prep.convert`'s triage (`probe`: corrupt, neither DICOM nor
video, non-ultrasound, still; every video of the folder belongs to its one study) and per-clip
processing (`convert_video`: decode, sector mask, crop, resize, JPEG round trip), so a study
interpreted here is seen by the towers exactly as the training shards were. Nothing is
written; no header field leaves this module except the frame rate. Files are numbered 1, 2,
... in file-name order (their paths relative to the folder, sorted) and named only by that
number: "file #3", in reasons, log lines and errors alike.
Study folders and files are often named after the patient, so no path, folder or file name
leaves this module, and reasons pass through `log_privacy.redact` (UIDs, dates, names).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import secrets

import numpy as np

log = logging.getLogger("echoprime_jax.study_reader")


class StudyReadError(ValueError):
  """The folder cannot be interpreted (missing, empty, no usable clip, several studies)."""


@dataclasses.dataclass
class StudyVideo:
  number: int  # 1-based position among the folder's files (sorted by name)
  frames: list[bytes]  # encoded frames at `size` (data prep's record format)
  num_frames: int
  fps: float
  channels: int  # 1 grey (B-mode), 3 colour (Doppler)

  def clip(self, length: int, stride: int) -> tuple[np.ndarray, np.ndarray]:
    """The evaluation clip (frame 0 onwards) -> (video (length, S, S, 3) uint8, mask (length,))."""
    from echoprime_jax.data import clips
    idx, mask = clips.clip_indices(self.num_frames, length, stride)
    return clips.decode_frames(self.frames, idx), mask

  def thumbnails(self, count: int = 4) -> np.ndarray:
    """(count, S, S, 3) uint8 frames evenly spaced over the video."""
    from echoprime_jax.data import clips
    idx = np.unique(np.linspace(0, self.num_frames - 1, count).round().astype(np.int32))
    return clips.decode_frames(self.frames, idx)


@dataclasses.dataclass
class Study:
  videos: list[StudyVideo]
  not_used: list[tuple[int, str, str]]  # (number N, status skipped/rejected, reason)
  num_files: int  # files read (numbers 1..num_files)


def read_study(folder: str, size: int, max_frames: int = 256, fallback_fps: float = 30.0,
               progress: bool = True, preset: str = "sector") -> Study:
  """Reads every file under `folder` (hidden files ignored) -> the study's clips at `size` px.

  preset: data prep's crop geometry ("echoprime": the released one, `region.compute_geometry`).
  Raises StudyReadError when the folder is missing or empty, when no file is a usable clip
  (the message lists each file's reason), or when the clips belong to several studies. No
  message names the folder or a file: "STUDY_DIR" and "file #N" stand for them.
  """
  from tqdm import tqdm

  from data_prep import convert, deid
  if not os.path.isdir(folder):
    raise StudyReadError("STUDY_DIR is not a folder (expected one study's DICOM files)")
  files = sorted(os.path.relpath(os.path.join(root, n), folder)
                 for root, _, names in os.walk(folder) for n in names if not n.startswith("."))
  if not files:
    raise StudyReadError("STUDY_DIR: the folder is empty (expected one study's DICOM files)")
  opts = convert.Options(size=size, max_frames=max_frames, fallback_fps=fallback_fps,
                         split_fractions=(1.0, 0.0, 0.0), preset=preset)
  key = secrets.token_bytes(32)  # pseudonyms are only compared within this call
  pseudo = deid.Pseudonymizer(key)
  videos, not_used, studies = [], [], set()
  for number, rel in enumerate(tqdm(files, desc="read study", unit="file",
                                    disable=not progress), start=1):
    path = os.path.join(folder, rel)
    # every video by its file name alone: all are this one study, whatever their subfolder
    row = convert.probe((path, pseudo("file", rel), key, opts, os.path.basename(rel)))
    if row["status"] != "pending":
      not_used.append((number, row["status"], _reason(row["reason"], number, path, rel)))
      log.warning("file #%d %s: %s", *not_used[-1])
      continue
    try:
      record, _ = convert.convert_video(path, {**row, "split": "train"}, opts)
    except Exception as e:  # one bad clip never stops the study
      not_used.append((number, "rejected",
                       _reason(f"{type(e).__name__}: {e}", number, path, rel)))
      log.warning("file #%d %s: %s", *not_used[-1])
      continue
    studies.add(row["study_id"])
    videos.append(StudyVideo(number, record["frames"], int(record["num_frames"]),
                             float(record["fps"]), int(record["channels"])))
  if not videos:
    reasons = "; ".join(f"file #{n}: {r}" for n, _, r in not_used)
    raise StudyReadError(f"STUDY_DIR: no usable echo clip among {len(files)} files "
                         f"({reasons})")
  if len(studies) > 1:
    raise StudyReadError(f"STUDY_DIR: the clips belong to {len(studies)} different studies "
                         "(StudyInstanceUID); interpret one study per folder")
  return Study(videos, not_used, len(files))


def _reason(reason: str, number: int, path: str, rel: str) -> str:
  """A file's reason, redacted, without the file's name (callers say "file #N"): data prep's
  `<file KEY>` and any form of the path become "file #N", a leading "file #N: " is dropped,
  and `log_privacy.redact` removes what is left (path fragments, UIDs, dates, names)."""
  import re

  from data_prep import log_privacy
  name = f"file #{number}"
  reason = re.sub(r"<file [0-9a-f]+>", name, reason)
  for form in sorted({path, os.path.abspath(path), rel}, key=len, reverse=True):
    if os.sep in form:  # a bare file name ("1") is matched by `redact`, on word boundaries
      reason = reason.replace(form, name)
  reason = log_privacy.redact(reason, path, rel)
  return reason[len(name) + 2:] if reason.startswith(name + ": ") else reason
