"""Echo archive (DICOM, or AVI / MP4 videos) -> de-identified ArrayRecord shards + manifest +
study index.

  python -m data_prep.convert --input ARCHIVE --output SHARDS --reports reports.csv \\
      --key-file deid.key --workers 8
  python -m data_prep.convert --input EchoNet-Dynamic --output SHARDS --layout echonet ...

Inputs are recognised by content (`media`): DICOM files, and video files (AVI, MP4 / MOV,
MKV / WebM; `video_reader`), whose study is their folder (`--layout auto`) or, in EchoNet's
layout, the video itself, with FileList.csv's split and labels (`echonet`).

Stages (each input file ends in the manifest exactly once, as converted / skipped / rejected):
  1. probe: read every file's header in parallel; non-DICOM, corrupt, non-ultrasound and
     still images (unless --keep-stills) are recorded with the reason.
  2. plan: group clips into studies, pseudonymise ids (keyed HMAC), assign splits by patient
     pseudonym (no patient in two splits), cut each split into shards of --videos-per-shard.
  3. write: one worker per shard decodes, masks the sector, crops and resizes every clip,
     encodes frames (JPEG by default) and writes `echoprime-<split>.array_record-i-of-n`
     to a temporary name, renamed when complete; a rerun skips completed shards.
  4. finish: manifest.parquet, studies.parquet (videos of each study, report, sections),
     TFDS metadata (dataset_info.json, features.json) so `tfds.builder_from_directory(OUT)`
     reads the same shards, and the optional id mapping for the data owner (--mapping-file).

Privacy (README, "Privacy"): no names, dates or raw UIDs are written anywhere in OUT or in the
log; input paths appear only as keyed pseudonyms (`file_key`), resolvable through the owner's
mapping file, which is refused inside OUT. Pixels: only the scan sector is stored; a file whose
sector cannot be found with confidence is rejected (`region.find_sector`). Reports: scrubbed of
names, dates, ids and header / sign-off blocks (`report_scrub`), counts recorded per study.
Per-file failures are recorded by pseudonym with redacted reasons (`log_privacy.redact`).

Kept in one file (~600 lines): the three stages share one manifest and its bookkeeping (every
input accounted for once); what they call lives in dicom_reader, region, deid and reports.
"""

from __future__ import annotations

import argparse
import collections
import csv
import dataclasses
import hashlib
import itertools
import json
import logging
import multiprocessing
import os
import sys
from typing import Any

import numpy as np

from data_prep import (deid, dicom_reader, echonet, log_privacy, media, record_schema, region,
                       report_scrub, reports, video_reader)
from echoprime_jax.runtime.cli import at_least  # argparse checks (no JAX)

log = logging.getLogger("data_prep.convert")

SPLITS = ("train", "val", "test")

# Every manifest row has every column (parquet needs one schema).
_MANIFEST_DEFAULTS = {"file_key": "", "status": "", "reason": "", "study_id": "", "patient_id": "",
                      "video_id": "", "split": "", "view": "", "num_frames": 0, "height": 0,
                      "width": 0, "fps": float("nan"), "duration_s": float("nan"), "channels": 0,
                      "bytes": 0, "region_source": "", "shard": "", "record_index": -1}


@dataclasses.dataclass(frozen=True)
class Options:
  size: int = 224
  preset: str = "sector"
  max_frames: int = 256
  keep_stills: bool = False
  frame_format: str = "jpeg"
  jpeg_quality: int = 90
  videos_per_shard: int = 64
  split_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
  fallback_fps: float = 30.0
  join_on: str = "StudyInstanceUID"
  drop_without_report: bool = False
  geometry_sample: int = 32  # frames used to find the sector
  max_file_bytes: int = 8 << 30  # larger files are rejected as oversized
  uncertain_sector: str = "reject"  # or "central-crop" (region.find_sector)
  report_phi: str = "scrub"  # "scrub" | "reject" | "keep" (report_scrub)
  layout: str = "auto"  # "auto" | "echonet": where a video's study comes from (LAYOUTS)


LAYOUTS = ("auto", "echonet")


# ------------------------------------------------------------------------------ probe


def failure_reason(error: Exception, path: str, file_key: str) -> str:
  """A per-file failure as a manifest reason: no path, path component, UID, date or name
  (`log_privacy.redact`); the file is named by its pseudonym."""
  if isinstance(error, region.SectorNotFound):
    message = f"sector not found: {error}"
  elif isinstance(error, dicom_reader.DicomReadError):
    message = str(error)
  else:
    message = f"{type(error).__name__}: {error}"
  message = message.replace(path, f"<file {file_key}>")
  return log_privacy.redact(message, path)


def probe(task: tuple[str, str, bytes, Options, str]) -> dict[str, Any]:
  """Header-level triage of one file -> a manifest row (+ private raw ids for planning).

  task: (path, file_key, key, opts, rel); rel, the path relative to the archive root, places
  a video in its study (`video_identifiers`).
  Never raises: any failure (unreadable, dangling link, corrupt header) is a rejected row."""
  path, file_key, key, opts, rel = task
  # "_"-prefixed fields are private to the run (raw path, raw study id): never written out.
  row: dict[str, Any] = {"file_key": file_key, "status": "pending", "reason": "", "_path": path}
  try:
    return _probe(row, path, rel, key, opts)
  except Exception as e:  # one bad file never stops the run
    return {**row, "status": "rejected", "reason": failure_reason(e, path, file_key)}


def video_identifiers(rel: str, layout: str) -> dict[str, str]:
  """A video file names no study or patient: its place in the archive does. auto: the study is
  the video's folder (relative to --input; a report's key is that folder's relative path);
  echonet: each video is its own study and patient (its file name without extension, the key
  of FileList.csv). Raw values, pseudonymised like DICOM UIDs."""
  if layout == "echonet":
    study = echonet.video_key(rel)
  else:
    study = os.path.dirname(rel) or "."
  return {"StudyInstanceUID": study, "PatientID": study, "SOPInstanceUID": rel}


def _probe(row: dict[str, Any], path: str, rel: str, key: bytes, opts: Options
           ) -> dict[str, Any]:
  if opts.layout == "echonet" and echonet.is_metadata(rel):
    return {**row, "status": "skipped", "reason": "EchoNet metadata file (not a video)"}
  size = os.path.getsize(path)
  if size > opts.max_file_bytes:
    return {**row, "status": "rejected",
            "reason": f"oversized: {size} bytes > limit {opts.max_file_bytes}"}
  info = media.read_info(path, opts.fallback_fps)
  if video_reader.is_video(info):
    info = dataclasses.replace(info, identifiers=video_identifiers(rel, opts.layout))
  if info.num_frames < 1:
    return {**row, "status": "rejected", "reason": "zero frames (NumberOfFrames = 0)"}
  if not info.is_ultrasound:
    return {**row, "status": "skipped",
            "reason": "not ultrasound (modality "
                      f"{dicom_reader.defined_term(info.modality, dicom_reader.MODALITY_TERMS)})"}
  if info.rows <= 0 or info.columns <= 0:
    return {**row, "status": "skipped", "reason": "no image (Rows/Columns missing)"}
  if not info.is_clip and not opts.keep_stills:
    return {**row, "status": "skipped", "reason": "still image (use --keep-stills to keep)"}
  pseudo = deid.Pseudonymizer(key)
  raw_study = info.identifiers.get(opts.join_on) or info.identifiers.get("StudyInstanceUID")
  if not raw_study:
    return {**row, "status": "rejected", "reason": f"no {opts.join_on} to group by"}
  raw_video = info.identifiers.get("SOPInstanceUID") or path
  return {**row, "num_frames": min(info.num_frames, opts.max_frames), "height": info.rows,
          "width": info.columns, "fps": info.fps, "duration_s": info.duration_s,
          "study_id": pseudo.study(raw_study),
          "patient_id": pseudo.patient(info.identifiers.get("PatientID") or raw_study),
          "video_id": pseudo.video(raw_video), "_raw_study": raw_study}


# ------------------------------------------------------------------------------- plan


def split_of(patient_id: str, fractions: tuple[float, float, float]) -> str:
  """Deterministic split from the patient pseudonym (uniform in [0, 1))."""
  u = int(hashlib.sha256(patient_id.encode()).hexdigest()[:12], 16) / float(16 ** 12)
  edges = np.cumsum(fractions) / np.sum(fractions)
  return SPLITS[int(np.searchsorted(edges, u, side="right"))] if u < edges[-1] else SPLITS[-1]


def plan_shards(rows: list[dict[str, Any]], opts: Options) -> list[dict[str, Any]]:
  """Pending rows -> shards: [{"split", "index", "count", "files": [row, ...]}]."""
  by_split: dict[str, list[dict[str, Any]]] = {s: [] for s in SPLITS}
  for row in rows:
    by_split[row["split"]].append(row)
  shards = []
  for split, items in by_split.items():
    items.sort(key=lambda r: (r["study_id"], r["video_id"]))  # a study's videos stay together
    chunks = [items[i:i + opts.videos_per_shard]
              for i in range(0, len(items), opts.videos_per_shard)]
    for i, chunk in enumerate(chunks):
      shards.append({"split": split, "index": i, "count": len(chunks), "files": chunk})
  return shards


def shard_name(split: str, index: int, count: int) -> str:
  return (f"{record_schema.DATASET_NAME}-{split}.array_record-{index:05d}-of-{count:05d}")


# ------------------------------------------------------------------------------ write


def decode_reduction(info: dicom_reader.DicomInfo, size: int, side: int | None = None) -> int:
  """Largest libjpeg DCT scale (1, 2, 4, 8) that still leaves >= `size` pixels across `side`
  source pixels (default: the frame's short side), so the final resize never upsamples."""
  side = min(info.rows, info.columns) if side is None else side
  r = 1
  while r < 8 and side / (2 * r) >= size:
    r *= 2
  return r


def convert_video(path: str, row: dict[str, Any], opts: Options) -> tuple[dict[str, Any], dict]:
  """One clip -> (record dict, manifest fields). Raises DicomReadError on bad pixel data.

  One pass over the file in the common case: the first frames set the geometry, then all
  frames are processed. JPEG clips are decoded at a reduced DCT scale when the sector is still
  >= opts.size pixels across at that scale (checked on the sample; if not, decoding restarts
  at a finer scale). The EchoPrime preset always decodes at full size, as released.
  """
  info = media.read_info(path, opts.fallback_fps)
  reduce = decode_reduction(info, opts.size) if opts.preset == "sector" else 1
  while True:
    source = media.iter_frames(info, opts.max_frames, reduce)
    first = list(itertools.islice(source, opts.geometry_sample))
    if not first:
      raise dicom_reader.DicomReadError(f"{path}: zero frames")
    sample = np.stack(first)  # one copy of the sample frames, not two
    del first
    geometry = region.compute_geometry(info, sample, opts.size, opts.preset,
                                       opts.uncertain_sector)
    scale = info.rows / sample.shape[1]  # > 1 when libjpeg decoded at reduced size
    finer = decode_reduction(info, opts.size, int(round(geometry.crop[2] * scale)))
    if reduce == 1 or finer >= reduce or scale == 1:
      break
    source.close()  # the sector is too small for this scale: decode again, finer
    reduce = finer
  # Grey content in an RGB container (most B-mode clips) is processed and stored as one
  # channel: a third of the resize and encode work. Colour anywhere in the sector (Doppler)
  # switches the clip back to RGB; frames already done are grey, so replicating them is exact.
  probe_px = np.nonzero(geometry.mask[::4, ::4])
  frames, colour = [], False
  for frame in itertools.chain(sample, source):
    if frame.ndim == 3 and not colour:
      if _has_colour(frame[::4, ::4][probe_px]):
        colour = True
      else:
        frame = np.ascontiguousarray(frame[..., 1])
    frames.append(geometry.apply(frame))
  if not frames:
    raise dicom_reader.DicomReadError(f"{path}: zero frames")
  if colour:
    frames = [dicom_reader.to_rgb(f) for f in frames]
  encoded = [record_schema.encode_frame(f, opts.frame_format, opts.jpeg_quality) for f in frames]
  channels = 3 if colour else 1
  record = {
      "video_id": row["video_id"], "study_id": row["study_id"], "patient_id": row["patient_id"],
      "split": row["split"], "view": row.get("view", ""), "frames": encoded,
      "frame_format": opts.frame_format, "fps_source": info.fps_source,
      "region_source": geometry.source, "num_frames": len(frames), "height": opts.size,
      "width": opts.size, "channels": channels, "fps": info.fps,
      "crop": np.round(np.asarray(geometry.crop) * scale).astype(np.int32),
      "source_shape": np.asarray([info.rows, info.columns], np.int32),
      "schema_version": record_schema.SCHEMA_VERSION,
  }
  return record, {"num_frames": len(frames), "region_source": geometry.source,
                  "channels": channels, "bytes": sum(len(b) for b in encoded)}


def _has_colour(pixels: np.ndarray, spread: int = 6, fraction: float = 1e-3) -> bool:
  """(N, 3) uint8 sector pixels -> True if more than `fraction` have channels `spread` apart.

  The tolerance absorbs JPEG chroma rounding of grey content; Doppler colour and tinted
  B-mode maps are far above it.
  """
  if pixels.size == 0:
    return False
  px = pixels.astype(np.int16)
  spread_px = np.maximum(np.abs(px[:, 0] - px[:, 1]), np.abs(px[:, 2] - px[:, 1]))
  return bool((spread_px > spread).mean() > fraction)


def _records_in(path: str) -> int:
  """The number of records a shard file holds; -1 when it is missing or unreadable."""
  from array_record.python.array_record_module import ArrayRecordReader
  if not os.path.isfile(path):
    return -1
  try:
    reader = ArrayRecordReader(path)
    try:
      return int(reader.num_records())
    finally:
      reader.close()
  except (OSError, RuntimeError, ValueError):
    return -1


def write_shard(task: tuple[dict[str, Any], str, Options]) -> list[dict]:
  """Writes one shard atomically; returns its manifest rows (also saved beside it)."""
  shard, out_dir, opts = task
  from array_record.python.array_record_module import ArrayRecordWriter
  name = shard_name(shard["split"], shard["index"], shard["count"])
  final, rows_path = os.path.join(out_dir, name), os.path.join(out_dir, "rows", name + ".jsonl")
  if os.path.exists(rows_path):  # completed by an earlier run, if its shard is still whole
    with open(rows_path) as f:
      done = [json.loads(line) for line in f]
    if _records_in(final) == sum(r["status"] == "converted" for r in done):
      return done
    log.warning("shard %s is missing or incomplete: writing it again", name)
  codec = record_schema.Codec()
  tmp = final + ".tmp"
  # One record per chunk: random access reads exactly one clip. Uncompressed: the payload is
  # JPEG/PNG already; Riegeli's default brotli saved ~7% and cost every training read ~0.12 ms.
  writer = ArrayRecordWriter(tmp, "group_size:1,uncompressed")
  rows, index = [], 0
  for row in shard["files"]:
    public = {k: v for k, v in row.items() if not k.startswith("_")}
    path = row["_path"]
    try:
      record, extra = convert_video(path, row, opts)
      writer.write(codec.encode(record))
      rows.append({**public, **extra, "status": "converted", "shard": name,
                   "record_index": index})
      index += 1
    except Exception as e:  # one bad file never stops the shard
      rows.append({**public, "status": "rejected",
                   "reason": failure_reason(e, path, row["file_key"]),
                   "shard": "", "record_index": -1})
  writer.close()
  os.replace(tmp, final)
  os.makedirs(os.path.dirname(rows_path), exist_ok=True)
  with open(rows_path + ".tmp", "w") as f:
    f.writelines(json.dumps(r) + "\n" for r in rows)
  os.replace(rows_path + ".tmp", rows_path)  # the completion marker, written last
  return rows


# ----------------------------------------------------------------------------- finish


def load_reports(path: str) -> dict[str, str]:
  """{join key: report text} from CSV / JSONL / Parquet with columns (<key>, report)."""
  if path.endswith(".parquet"):
    import pyarrow.parquet as pq
    records = pq.read_table(path).to_pylist()
  elif path.endswith((".jsonl", ".json")):
    with open(path) as f:
      records = [json.loads(line) for line in f if line.strip()]
  else:
    with open(path, newline="") as f:
      records = list(csv.DictReader(f))
  if not records:
    return {}
  columns = list(records[0])
  text_col = "report" if "report" in columns else columns[-1]
  key_col = [c for c in columns if c != text_col][0]
  return {str(r[key_col]): str(r[text_col]) for r in records}


def _write_parquet(rows: list[dict[str, Any]], path: str) -> None:
  import pyarrow as pa
  import pyarrow.parquet as pq
  pq.write_table(pa.Table.from_pylist(rows), path)


def write_tfds_metadata(out_dir: str, rows: list[dict[str, Any]]) -> None:
  import tensorflow_datasets as tfds
  split_infos = []
  for split in SPLITS:
    shards: dict[str, int] = {}
    for r in rows:
      if r["status"] == "converted" and r["split"] == split:
        shards[r["shard"]] = shards.get(r["shard"], 0) + 1
    if not shards:
      continue
    names = sorted(set(n for n in os.listdir(out_dir) if n.startswith(
        f"{record_schema.DATASET_NAME}-{split}.array_record-") and not n.endswith(".tmp")))
    template = tfds.core.ShardedFileTemplate(
        data_dir=out_dir, template=record_schema.FILE_TEMPLATE,
        dataset_name=record_schema.DATASET_NAME, split=split, filetype_suffix="array_record")
    split_infos.append(tfds.core.SplitInfo(name=split, shard_lengths=[shards.get(n, 0)
                                                                       for n in names],
                                           num_bytes=0, filename_template=template))
  if not split_infos:  # nothing converted: there is no dataset to describe
    log.warning("no file was converted: no TFDS metadata written (manifest.parquet says why)")
    return
  tfds.folder_dataset.write_metadata(data_dir=out_dir, features=record_schema.features(),
                                     split_infos=split_infos,
                                     filename_template=record_schema.FILE_TEMPLATE,
                                     check_data=False)


def list_inputs(input_dir: str, pseudo: deid.Pseudonymizer) -> dict[str, str]:
  """{file_key: path} for every file under input_dir (hidden files ignored). The key is the
  keyed pseudonym of the path relative to input_dir, so it is stable across runs and hosts."""
  files = sorted(os.path.join(root, n) for root, _, names in os.walk(input_dir)
                 for n in names if not n.startswith("."))
  return {pseudo("file", os.path.relpath(p, input_dir)): p for p in files}


def load_labels(labels_path: str, paths: dict[str, str]) -> dict[str, str]:
  """{file_key: view} from a CSV (file, view) whose paths are relative to the CSV itself."""
  with open(labels_path, newline="") as f:
    table = list(csv.DictReader(f))
  base = os.path.dirname(os.path.abspath(labels_path))
  by_abs = {os.path.abspath(p): k for k, p in paths.items()}
  return {by_abs[os.path.join(base, r["file"])]: r["view"] for r in table
          if os.path.join(base, r["file"]) in by_abs}


REPORT_PHI_CHOICES = ("scrub", "reject", "keep")


def prepare_report(text: str, mode: str) -> dict[str, Any]:
  """A raw report -> {"report": what is stored, "redactions": {kind: count}, "report_phi":
  what was done}. scrub: PHI removed (`report_scrub`); reject: a report in which anything is
  found is not stored; keep: stored as given (already de-identified corpora only). The counts
  are always those of the scrubber, never the text."""
  if mode not in REPORT_PHI_CHOICES:
    raise ValueError(f"report_phi must be one of {REPORT_PHI_CHOICES}, got {mode!r}")
  scrubbed = report_scrub.scrub(text)
  found = sum(scrubbed.counts.values()) > 0
  if mode == "keep":
    stored, action = text, "kept"
  elif not found:
    stored, action = scrubbed.text, "clean"
  elif mode == "scrub":
    stored, action = scrubbed.text, "scrubbed"
  else:
    stored, action = "", "rejected"
  return {"report": stored, "redactions": dict(scrubbed.counts), "report_phi": action}


def assign(rows: list[dict[str, Any]], opts: Options, report_by_key: dict[str, str],
           labels: dict[str, str], have_reports: bool,
           file_list: echonet.FileList | None = None
           ) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
  """Sets split and view on probed rows; returns (rows to convert, {study_id: prepared
  report (`prepare_report`)}). Raw report text goes no further than this function.
  file_list (--layout echonet): its split wins; a video it does not list is skipped."""
  study_reports: dict[str, dict[str, Any]] = {}
  pending = []
  for row in rows:
    if row["status"] != "pending":
      continue
    fixed = ""
    if file_list is not None:
      if row["_raw_study"] not in file_list:
        row.update(status="skipped", reason=f"not listed in {echonet.FILE_LIST}")
        continue
      fixed = file_list.splits[row["_raw_study"]]
    row["split"] = fixed or split_of(row["patient_id"], opts.split_fractions)
    row["view"] = labels.get(row["file_key"], "")
    if row["_raw_study"] in report_by_key:
      if row["study_id"] not in study_reports:
        study_reports[row["study_id"]] = prepare_report(report_by_key[row["_raw_study"]],
                                                        opts.report_phi)
    elif opts.drop_without_report and have_reports:
      row.update(status="skipped", reason="study has no report (--drop-studies-without-report)")
      continue
    pending.append(row)
  return pending, study_reports


def record_plan(out_dir: str, shards: list[dict[str, Any]], opts: Options) -> None:
  """Writes plan.json; refuses an output folder holding a conversion of something else."""
  os.makedirs(out_dir, exist_ok=True)
  plan_id = hashlib.sha256(json.dumps(
      [[s["split"], s["index"], [r["file_key"] for r in s["files"]]] for s in shards]
      + [dataclasses.asdict(opts)], sort_keys=True, default=str).encode()).hexdigest()
  plan_path = os.path.join(out_dir, "plan.json")
  if os.path.exists(plan_path):
    with open(plan_path) as f:
      if json.load(f)["plan_id"] != plan_id:
        raise SystemExit(f"{out_dir} holds a conversion of different inputs or options; "
                         "use a new --output")
  with open(plan_path, "w") as f:
    json.dump({"plan_id": plan_id, "shards": len(shards),
               "schema_version": record_schema.SCHEMA_VERSION}, f)


def check_mapping_file(mapping_file: str, out_dir: str) -> None:
  """The owner's mapping (raw ids, input paths) must never travel with the shards: a path
  inside the output folder is refused (ValueError)."""
  out, mapping = os.path.realpath(out_dir), os.path.realpath(mapping_file)
  if os.path.commonpath([out, mapping]) == out:
    raise ValueError("--mapping-file lies inside --output, which is meant to be shared; "
                     "write the mapping (raw ids and input paths) outside the shard folder")


def finish(out_dir: str, rows: list[dict[str, Any]], written: list[dict[str, Any]],
           study_reports: dict[str, dict[str, Any]], input_dir: str,
           mapping_file: str | None = None, file_list: echonet.FileList | None = None
           ) -> list[dict[str, Any]]:
  """manifest.parquet, studies.parquet, TFDS metadata, the owner's mapping; returns the manifest.

  rows: every probed file (one each); written: the rows the shard writers returned;
  study_reports: `assign`'s prepared reports; file_list: EchoNet's labels, one column each in
  studies.parquet.
  """
  study_labels = {}
  if file_list is not None:
    study_labels = {r["study_id"]: file_list.labels[r["_raw_study"]] for r in rows
                    if r.get("_raw_study") in file_list}
  by_key = {r["file_key"]: r for r in written}
  manifest = [by_key.get(r["file_key"], {k: v for k, v in r.items() if not k.startswith("_")})
              for r in rows]
  manifest = [{**_MANIFEST_DEFAULTS, **r} for r in manifest]
  _write_parquet(manifest, os.path.join(out_dir, "manifest.parquet"))
  studies = []
  converted = [r for r in manifest if r["status"] == "converted"]
  for study_id in sorted({r["study_id"] for r in converted}):
    vids = [r for r in converted if r["study_id"] == study_id]
    prepared = study_reports.get(study_id, {"report": "", "redactions": {},
                                            "report_phi": "none"})
    text = prepared["report"]
    studies.append({"study_id": study_id, "patient_id": vids[0]["patient_id"],
                    "split": vids[0]["split"], "video_ids": [r["video_id"] for r in vids],
                    "shards": [r["shard"] for r in vids],
                    "record_indices": [int(r["record_index"]) for r in vids],
                    "views": [r.get("view", "") for r in vids], "report": text,
                    "sections": json.dumps(reports.parse_sections(text)),
                    "report_phi": prepared["report_phi"],
                    "report_redactions": json.dumps(prepared["redactions"], sort_keys=True),
                    **study_labels.get(study_id, {})})
  _write_parquet(studies, os.path.join(out_dir, "studies.parquet"))
  write_tfds_metadata(out_dir, manifest)
  if mapping_file:
    check_mapping_file(mapping_file, out_dir)
    with open(mapping_file + ".tmp", "w") as f:  # owner-only: raw ids <-> pseudonyms
      for r in rows:
        f.write(json.dumps({"file_key": r["file_key"],
                            "path": os.path.relpath(r["_path"], input_dir),
                            "raw_study": r.get("_raw_study", ""),
                            "study_id": r.get("study_id", "")}) + "\n")
    os.replace(mapping_file + ".tmp", mapping_file)
  counts = {s: sum(r["status"] == s for r in manifest) for s in ("converted", "skipped",
                                                                  "rejected")}
  redacted = sum((collections.Counter(p["redactions"]) for p in study_reports.values()),
                 collections.Counter())  # (Counter addition drops zero counts)
  log.info("reports: %s; removed from their text: %s",
           dict(collections.Counter(p["report_phi"] for p in study_reports.values())),
           dict(redacted) or "nothing")
  log.info("done: %s -> %s", counts, out_dir)
  return manifest


def run(input_dir: str, out_dir: str, key: bytes, opts: Options, reports_path: str | None = None,
        labels_path: str | None = None, workers: int = 1, mapping_file: str | None = None,
        progress: bool = True) -> list[dict[str, Any]]:
  """The whole conversion on one machine (worker processes); returns the manifest rows."""
  from tqdm import tqdm
  os.makedirs(out_dir, exist_ok=True)
  pseudo = deid.Pseudonymizer(key)
  paths = list_inputs(input_dir, pseudo)
  labels = load_labels(labels_path, paths) if labels_path else {}
  file_list = echonet.read_file_list(input_dir) if opts.layout == "echonet" else None
  log.info("%d input files (key kind: %s)", len(paths), "INSECURE TEST" if pseudo.insecure
           else "secret")

  pool = multiprocessing.get_context("spawn").Pool(workers) if workers > 1 else None
  mapper = pool.imap if pool else map
  tasks = [(p, k, key, opts, os.path.relpath(p, input_dir))
           for k, p in sorted(paths.items(), key=lambda kv: kv[1])]
  rows = list(tqdm(mapper(probe, tasks), total=len(tasks), desc="probe", unit="file",
                   disable=not progress))
  report_by_key = load_reports(reports_path) if reports_path else {}
  pending, study_reports = assign(rows, opts, report_by_key, labels, bool(reports_path),
                                  file_list)
  shards = plan_shards(pending, opts)
  record_plan(out_dir, shards, opts)
  written = []
  for shard_rows in tqdm(mapper(write_shard, [(s, out_dir, opts) for s in shards]),
                         total=len(shards), desc="shards", unit="shard", disable=not progress):
    written.extend(shard_rows)
  if pool:
    pool.close()
    pool.join()
  return finish(out_dir, rows, written, study_reports, input_dir, mapping_file, file_list)


def build_parser(prog: str = "python -m data_prep.convert",
                 description: str = __doc__) -> argparse.ArgumentParser:
  """The conversion flags (shared with data_prep.beam_convert)."""
  p = argparse.ArgumentParser(prog=prog, description=description,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--input", required=True,
                 help="archive folder (searched recursively): DICOM files and / or AVI / MP4 / "
                      "MOV / MKV videos, recognised by content")
  p.add_argument("--layout", default="auto", choices=LAYOUTS,
                 help="auto: DICOM files are grouped into studies by their headers, videos by "
                      "their folder (one folder, one study); echonet: EchoNet's layout "
                      "(FileList.csv at the root beside Videos/): each video its own study, "
                      "FileList.csv's Split kept and its EF / ESV / EDV (numeric columns) "
                      "written as label columns of studies.parquet")
  p.add_argument("--output", required=True, help="shard folder (created; reruns resume)")
  p.add_argument("--reports", help="CSV/JSONL/Parquet: join key column + 'report' column")
  p.add_argument("--join-on", default="StudyInstanceUID",
                 choices=["StudyInstanceUID", "AccessionNumber"],
                 help="DICOM attribute that matches the reports' key column")
  p.add_argument("--labels", help="optional CSV (file, view): view labels by relative path")
  p.add_argument("--key-file", help="secret de-identification key (or $ECHOPRIME_DEID_KEY)")
  p.add_argument("--insecure-test-key", action="store_true",
                 help="use a public test key: synthetic data only, never real patients")
  p.add_argument("--mapping-file", help="write raw ids <-> pseudonyms here (data owner only; "
                 "keep it outside the shard folder)")
  p.add_argument("--size", type=at_least(16), default=224,
                 help="output frame size (default 224)")
  p.add_argument("--preset", default="sector", choices=["sector", "echoprime"],
                 help="crop geometry: square around the sector, or EchoPrime's released one")
  p.add_argument("--max-frames", type=at_least(1), default=256,
                 help="frames kept per clip (cap)")
  p.add_argument("--keep-stills", action="store_true", help="keep single-frame images")
  p.add_argument("--frame-format", default="jpeg", choices=["jpeg", "png"],
                 help="per-frame encoding (png = lossless)")
  p.add_argument("--jpeg-quality", type=int, default=90, help="JPEG quality (default 90)")
  p.add_argument("--videos-per-shard", type=at_least(1), default=64, help="records per shard")
  p.add_argument("--split-fractions", default="0.8,0.1,0.1",
                 help="train,val,test fractions by patient (default 0.8,0.1,0.1)")
  p.add_argument("--fallback-fps", type=float, default=30.0,
                 help="frame rate when the header gives none (recorded as 'fallback')")
  p.add_argument("--drop-studies-without-report", action="store_true",
                 help="skip studies whose report is missing (default: keep them)")
  p.add_argument("--report-phi", default="scrub", choices=REPORT_PHI_CHOICES,
                 help="what to do with person names, dates, times, phone numbers, ids, "
                      "e-mails, URLs, ages > 89 and header / sign-off blocks in reports: "
                      "scrub them (default), reject a report in which any is found (stored "
                      "empty), or keep reports as given (only for already de-identified "
                      "corpora); counts of what was found are recorded per study either way")
  p.add_argument("--uncertain-sector", default="reject", choices=region.UNCERTAIN_CHOICES,
                 help="a clip or still whose scan sector cannot be found with confidence is "
                      "rejected (default), or with central-crop keeps only the middle half of "
                      "its 2D region or frame (text in the margins is dropped; text near the "
                      "centre would not be: use only on archives known to be clean there)")
  p.add_argument("--max-file-gb", type=float, default=8.0,
                 help="files larger than this are rejected as oversized (default 8)")
  p.add_argument("--workers", type=at_least(1), default=max(1, (os.cpu_count() or 1)),
                 help="worker processes (default: all cores)")
  return p


def key_and_options(args: argparse.Namespace) -> tuple[bytes, Options]:
  """Parsed flags -> (de-identification key, Options). ValueError says what is wrong."""
  # Paths are named by their flag only: an archive's folders may be named after people.
  if not os.path.isdir(args.input):
    raise ValueError("--input is not a folder: give the archive's root folder (it is searched "
                     "recursively)")
  if not any(files for _, _, files in os.walk(args.input)):
    raise ValueError("--input holds no files: nothing to convert (is it the right folder?)")
  for flag, path in (("--reports", args.reports), ("--labels", args.labels)):
    if path and not os.path.isfile(path):
      raise ValueError(f"{flag}: no such file")
  if os.path.exists(args.output) and not os.path.isdir(args.output):
    raise ValueError("--output is a file: give a folder for the shards")
  if not 1 <= args.jpeg_quality <= 100:
    raise ValueError(f"--jpeg-quality must be 1-100, got {args.jpeg_quality}")
  try:
    key = deid.load_key(args.key_file, args.insecure_test_key)
  except deid.MissingKeyError as e:
    raise ValueError(str(e)) from e
  try:
    fractions = tuple(float(x) for x in args.split_fractions.split(","))
  except ValueError:
    fractions = ()
  if len(fractions) != 3 or min(fractions) < 0 or sum(fractions) <= 0:
    raise ValueError("--split-fractions needs three non-negative numbers")
  if args.mapping_file:
    check_mapping_file(args.mapping_file, args.output)
  if args.layout == "echonet":
    echonet.read_file_list(args.input)  # present and readable, before any work
  return key, Options(size=args.size, preset=args.preset, max_frames=args.max_frames,
                      keep_stills=args.keep_stills, frame_format=args.frame_format,
                      jpeg_quality=args.jpeg_quality, videos_per_shard=args.videos_per_shard,
                      split_fractions=fractions, fallback_fps=args.fallback_fps,
                      join_on=args.join_on, drop_without_report=args.drop_studies_without_report,
                      max_file_bytes=int(args.max_file_gb * (1 << 30)),
                      uncertain_sector=args.uncertain_sector, report_phi=args.report_phi,
                      layout=args.layout)


def main(argv: list[str] | None = None) -> int:
  args = build_parser().parse_args(argv)
  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
  try:
    key, opts = key_and_options(args)
  except ValueError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  run(args.input, args.output, key, opts, args.reports, args.labels, args.workers,
      args.mapping_file)
  return 0


if __name__ == "__main__":
  sys.exit(main())
