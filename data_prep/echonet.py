"""EchoNet's dataset layout (`--layout echonet`): `FileList.csv` beside `Videos/*.avi`.

EchoNet-Dynamic's FileList.csv has one row per video: FileName (with or without `.avi`), EF,
ESV, EDV, FrameHeight, FrameWidth, FPS, NumberOfFrames, Split (TRAIN / VAL / TEST). Each video is
its own study and patient (one echo per patient). The dataset's split is kept; its numeric
columns other than the video's geometry become the study's labels (`studies.parquet` columns,
read by `python -m echoprime_jax.probe --labels SHARDS/studies.parquet --target EF`).
EchoNet-Pediatric and -LVH lay out their lists alike; a Split value other than train / val /
test (Pediatric's fold numbers) leaves that video to the patient-hash split, with a warning.

Raw file names stay on this machine: they key the rows here and are pseudonymised by `convert`
like every other identifier.
"""

from __future__ import annotations

import csv
import dataclasses
import logging
import math
import os

log = logging.getLogger("data_prep.echonet")

FILE_LIST = "FileList.csv"
METADATA = (FILE_LIST, "VolumeTracings.csv")  # at the dataset root; not videos
_NOT_LABELS = {"filename", "split", "frameheight", "framewidth", "fps", "numberofframes"}
_SPLITS = {"train": "train", "val": "val", "validation": "val", "test": "test"}


@dataclasses.dataclass(frozen=True)
class FileList:
  splits: dict[str, str]  # video stem -> train / val / test ("" : not given)
  labels: dict[str, dict[str, float]]  # video stem -> {column: value} (NaN: blank)

  def __contains__(self, stem: str) -> bool:
    return stem in self.splits


def video_key(rel: str) -> str:
  """A video's key in the list: its file name without the extension."""
  return os.path.splitext(os.path.basename(rel))[0]


def is_metadata(rel: str) -> bool:
  return rel in METADATA


def read_file_list(input_dir: str) -> FileList:
  """INPUT/FileList.csv -> FileList. ValueError (one line) when it is missing or malformed."""
  path = os.path.join(input_dir, FILE_LIST)
  if not os.path.isfile(path):
    raise ValueError(f"--layout echonet needs {FILE_LIST} at the root of --input (EchoNet's "
                     "layout: FileList.csv beside Videos/)")
  with open(path, newline="", encoding="utf-8-sig") as f:
    rows = list(csv.DictReader(f))
  if not rows or "FileName" not in rows[0]:
    raise ValueError(f"{FILE_LIST} (in --input) has no FileName column: not EchoNet's file list")
  label_columns = [c for c in rows[0] if c and c.lower() not in _NOT_LABELS]
  splits, labels, unknown = {}, {}, 0
  for n, row in enumerate(rows, start=2):
    stem = video_key(str(row["FileName"]).strip())
    if not stem:
      raise ValueError(f"{FILE_LIST} (in --input) line {n}: empty FileName")
    split = _SPLITS.get(str(row.get("Split", "")).strip().lower(), "")
    unknown += not split
    splits[stem] = split
    labels[stem] = {c: _number(row.get(c)) for c in label_columns}
  stated = [c for c in label_columns if any(not math.isnan(v[c]) for v in labels.values())]
  labels = {stem: {c: v[c] for c in stated} for stem, v in labels.items()}
  if unknown:
    log.warning("%d of %d videos in %s have a Split other than TRAIN / VAL / TEST: they are "
                "split by patient hash instead", unknown, len(rows), FILE_LIST)
  return FileList(splits, labels)


def _number(value) -> float:
  try:
    x = float(value)
  except (TypeError, ValueError):
    return math.nan
  return x if math.isfinite(x) else math.nan
