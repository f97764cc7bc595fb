"""Grain input pipelines: video-report pairs (CLIP, views) and whole studies (MIL, export).

Order (MaxText's, with per-process slicing after the global shuffle):

  index of the split's videos (or studies)
    -> shuffle(seed)            training only; a fresh permutation every epoch
    -> repeat(num_epochs)       None = forever (training)
    -> map / random_map         read + decode the record, sample the clip, draw its
                                augmentation (applied later, on the device), tokenise;
                                random_map seeds each element from (seed, global position), so
                                augmentation does not depend on how many processes read
    -> [process_index::process_count]   disjoint per-process slices that cover each epoch
    -> to_iter_dataset(ReadOptions)     reader threads; small buffers: records are MBs
    -> batch(per-process batch size)
    -> mp_prefetch(workers)             optional worker processes
  then `to_global(batch, sharding)` places each process's batch into global jax.Arrays.

Batches hold uint8 frames: normalisation happens on the device (`normalize.py`), so a clip
crosses PCIe at a quarter of its float32 size. A finite (evaluation) pass is padded to whole
global batches with elements whose `valid` is False, so every process runs the same number of
steps and nothing is dropped. Iterator state (`it.get_state()` / `set_state()`, or Orbax with
`grain.checkpoint.CheckpointSave` / `CheckpointRestore`) resumes at exactly the next batch.
"""

from __future__ import annotations

import dataclasses
import threading
from typing import Any

import numpy as np

from echoprime_jax.data import augment as augment_lib
from echoprime_jax.data import clips
from echoprime_jax.data.shards import ShardIndex, Study, video_table
from echoprime_jax.data.tokenizer import ReportEncoder


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
  batch_size: int  # per process
  clip_length: int = 16
  clip_stride: int = 2
  frame_size: int = 224  # the model's; the records must hold frames of this size
  augment: augment_lib.AugmentConfig | None = augment_lib.AugmentConfig()
  seed: int = 0
  num_epochs: int | None = None  # None: forever (training); 1: one pass (evaluation)
  require_report: bool = True  # video-report pairs: skip videos of studies without a report
  max_videos: int = 16  # study pipeline: videos per study (a random subset when training)
  read_threads: int = 4
  read_buffer: int = 8  # elements in flight per process (each ~1-3 MB decoded)
  workers: int = 0  # mp_prefetch worker processes (0: read in this process)
  worker_buffer: int = 2  # batches buffered per worker


class _Records:
  """Random access to the frames of one split's records; cheap to pickle into workers."""

  def __init__(self, paths: list[str]):
    self.paths = list(paths)
    self._source = None
    self._codec = None
    self._lock = threading.Lock()  # reader threads open the files once

  def __getstate__(self):
    return {"paths": self.paths}

  def __setstate__(self, state):
    self.__init__(state["paths"])

  def _open(self):
    with self._lock:
      if self._source is None:
        import grain
        from data_prep import record_schema
        self._codec = record_schema.Codec()
        self._source = grain.sources.ArrayRecordDataSource(self.paths)
    return self._source

  def __len__(self) -> int:
    return len(self._open())

  def __getitem__(self, index: int) -> dict[str, Any]:
    """-> {"frames": list of encoded frames, "num_frames": int} of record `index`."""
    data = self._open()[int(index)]
    return self._codec.decode_video(data)

  def check_frame_size(self, size: int, where: str) -> None:
    """Raises a one-line ValueError unless the records' frames are size x size (data prep
    writes one size per folder: the first record's first frame speaks for all)."""
    if not len(self):
      return
    h, w = clips.decode_frame(self[0]["frames"][0]).shape[:2]
    if (h, w) != (size, size):
      raise ValueError(f"{where} holds {h}x{w} frames, the model takes {size}x{size}: convert "
                       f"the data again with --size {size} (python -m data_prep.convert)")


def _clip(record: dict[str, Any], cfg: PipelineConfig, rng: np.random.Generator | None,
          train: bool) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
  """-> (clip (T, H, W, 3) uint8, frame_mask (T,) bool, augmentation parameters) of one record.

  The parameters (see `augment.py`) are drawn here and applied on the device; they are empty
  in evaluation or with augmentation off.
  """
  n = int(record["num_frames"])
  start = clips.random_start(rng, n, cfg.clip_length, cfg.clip_stride) if train else 0
  idx, mask = clips.clip_indices(n, cfg.clip_length, cfg.clip_stride, start)
  clip = clips.decode_frames(record["frames"], idx, cfg.frame_size)
  params = {}
  if train and cfg.augment is not None:
    params = augment_lib.draw_params(rng, cfg.augment, *clip.shape[1:3])
  return clip, mask, params


class VideoReportElement:
  """Table row (record, study position, view) -> one pair's arrays (see `clip_dataset`);
  without an encoder, the clip and its view only (view classification)."""

  def __init__(self, records: _Records, studies: list[Study], encoder: ReportEncoder | None,
               cfg: PipelineConfig, train: bool):
    self.records, self.encoder, self.cfg, self.train = records, encoder, cfg, train
    self.sections = [s.sections for s in studies]

  def __call__(self, row: np.ndarray, rng: np.random.Generator | None = None) -> dict:
    record_index, study, view = (int(v) for v in row)
    if record_index < 0:  # evaluation padding
      return self.padding()
    record = self.records[record_index]
    clip, mask, params = _clip(record, self.cfg, rng, self.train)
    out = {"video": clip, "frame_mask": mask, "view": np.int32(view),
           "record": np.int64(record_index), "study": np.int32(study), "valid": np.bool_(True),
           **params}
    if self.encoder is not None:
      out["text_ids"], out["text_mask"] = self.encoder.encode(self.sections[study],
                                                              rng if self.train else None)
    return out

  def padding(self) -> dict:
    """An empty slot of an evaluation batch (also: the batch's layout, for `echoprime_jax.aot`)."""
    c = self.cfg
    out = {"video": np.zeros((c.clip_length, c.frame_size, c.frame_size, 3), np.uint8),
           "frame_mask": np.zeros((c.clip_length,), bool),
           "view": np.int32(-1), "record": np.int64(-1), "study": np.int32(-1),
           "valid": np.bool_(False)}
    if self.encoder is not None:
      out["text_ids"] = np.full((self.encoder.max_len,), self.encoder.pad_id, np.int32)
      out["text_mask"] = np.zeros((self.encoder.max_len,), np.int32)
    return out


class StudyElement:
  """Study position -> all its videos (padded to max_videos), views, report, sections."""

  def __init__(self, records: _Records, studies: list[Study], encoder: ReportEncoder,
               cfg: PipelineConfig, train: bool):
    self.records, self.studies, self.encoder = records, studies, encoder
    self.cfg, self.train = cfg, train

  def __call__(self, position: int, rng: np.random.Generator | None = None) -> dict:
    c, position = self.cfg, int(position)
    v, t, s = c.max_videos, c.clip_length, c.frame_size
    out = {"videos": np.zeros((v, t, s, s, 3), np.uint8),
           "video_mask": np.zeros((v,), bool), "frame_mask": np.zeros((v, t), bool),
           "views": np.full((v,), -1, np.int32), "study": np.int32(position),
           "valid": np.bool_(position >= 0)}
    sections = self.studies[position].sections if position >= 0 else {}
    out["text_ids"], out["text_mask"] = self.encoder.encode(sections,
                                                            rng if self.train else None)
    (out["section_ids"], out["section_mask"],
     out["section_present"]) = self.encoder.encode_sections(sections)
    if position < 0:  # evaluation padding
      return out
    study = self.studies[position]
    order = np.arange(len(study.records))
    if len(order) > v:  # too many videos: a random subset when training, the first ones else
      order = np.sort(rng.choice(order, v, replace=False)) if self.train else order[:v]
    if self.train and c.augment is not None:  # identity parameters for the empty slots
      out.update({k: np.repeat(p[None], v, axis=0)
                  for k, p in augment_lib.identity_params().items()})
    for slot, i in enumerate(order):
      clip, mask, params = _clip(self.records[study.records[i]], c, rng, self.train)
      out["videos"][slot], out["frame_mask"][slot] = clip, mask
      out["video_mask"][slot] = True
      out["views"][slot] = study.views[i]
      for k, p in params.items():
        out[k][slot] = p
    return out


def finish(ds, element, cfg: PipelineConfig, train: bool, process_index: int,
            process_count: int):
  """shuffle -> repeat -> (random_)map -> per-process slice -> threads -> batch -> workers:
  the tail every pipeline here shares (`element(item[, rng]) -> dict of arrays`)."""
  import grain
  if train:
    ds = ds.shuffle(seed=cfg.seed)
  ds = ds.repeat(cfg.num_epochs)
  ds = ds.random_map(element, seed=cfg.seed) if train else ds.map(element)
  ds = ds[process_index::process_count]
  it = ds.to_iter_dataset(grain.ReadOptions(num_threads=cfg.read_threads,
                                            prefetch_buffer_size=cfg.read_buffer))
  it = it.batch(cfg.batch_size, drop_remainder=True)
  if cfg.workers > 0:
    from absl import flags
    if not flags.FLAGS.is_parsed():  # Grain's workers read absl flags; library callers (tests,
      flags.FLAGS.mark_as_parsed()   # notebooks) have not parsed any: use the defaults
    it = it.mp_prefetch(grain.MultiprocessingOptions(num_workers=cfg.workers,
                                                     per_worker_buffer_size=cfg.worker_buffer))
  return it


def pad_to_global_batches(items: np.ndarray, cfg: PipelineConfig, process_count: int,
                           fill) -> np.ndarray:
  """A finite pass: pad to whole global batches (fill = a padding item) so no element is lost."""
  per_step = cfg.batch_size * process_count
  extra = (-len(items)) % per_step
  if extra == 0:
    return items
  pad = np.repeat(np.asarray([fill], items.dtype).reshape(1, *items.shape[1:]), extra, axis=0)
  return np.concatenate([items, pad])


def process_slot(process_index: int | None, process_count: int | None) -> tuple[int, int]:
  if process_index is None or process_count is None:
    import jax
    return jax.process_index(), jax.process_count()
  return process_index, process_count


def clip_dataset(index: ShardIndex, split: str, encoder: ReportEncoder | None,
                 cfg: PipelineConfig, *, train: bool, process_index: int | None = None,
                 process_count: int | None = None, taxonomy=None):
  """Video-report pairs, batched per process. Each batch:

    video       (B, T, H, W, 3) uint8     frame_mask (B, T) bool (False = padding frame)
    text_ids    (B, L) int32              text_mask  (B, L) int32 (L = encoder.max_len;
                                          absent when encoder is None: clips and views only)
    view        (B,) int32 (COARSE_VIEWS index, or the class in `taxonomy`; -1 unknown)
    record      (B,) int64 (global record index), study (B,) int32, valid (B,) bool
  plus, when training with augmentation, aug_affine (B, 2, 3), aug_intensity (B, 3) and
  aug_erase (B, 4): the per-clip parameters that `augment.batch_video` applies on the device.
  """
  process_index, process_count = process_slot(process_index, process_count)
  import grain
  records = _Records(index.shard_paths(split))
  records.check_frame_size(cfg.frame_size, f"split {split!r} of {index.data_dir}")
  studies = index.studies(split)
  table = video_table(studies, cfg.require_report, taxonomy)
  if len(table) == 0:
    raise ValueError(f"split {split!r} of {index.data_dir} has no videos"
                     + (" with a report" if cfg.require_report else ""))
  if cfg.num_epochs is not None and not train:
    table = pad_to_global_batches(table, cfg, process_count, (-1, -1, -1))
  element = VideoReportElement(records, studies, encoder, cfg, train)
  return finish(grain.MapDataset.source(table), element, cfg, train, process_index,
                 process_count)


def study_dataset(index: ShardIndex, split: str, encoder: ReportEncoder, cfg: PipelineConfig,
                  *, train: bool, process_index: int | None = None,
                  process_count: int | None = None):
  """Whole studies, batched per process. Each batch:

    videos        (B, V, T, H, W, 3) uint8   video_mask (B, V) bool   frame_mask (B, V, T) bool
    views         (B, V) int32               text_ids / text_mask (B, L) int32
    section_ids   (B, S, Ls) int32           section_mask (B, S, Ls) int32
    section_present (B, S) bool              study (B,) int32, valid (B,) bool
  (V = cfg.max_videos, S = 17 sections incl. "Other", Ls = encoder.section_len)
  plus, when training with augmentation, aug_affine (B, V, 2, 3), aug_intensity (B, V, 3),
  aug_erase (B, V, 4) (identity in empty slots): `augment.batch_video(batch, "videos")`.
  """
  process_index, process_count = process_slot(process_index, process_count)
  import grain
  records = _Records(index.shard_paths(split))
  records.check_frame_size(cfg.frame_size, f"split {split!r} of {index.data_dir}")
  studies = index.studies(split)
  if cfg.require_report:
    keep = [i for i, s in enumerate(studies) if s.has_report]
  else:
    keep = list(range(len(studies)))
  positions = np.asarray(keep, np.int64)
  if len(positions) == 0:
    raise ValueError(f"split {split!r} of {index.data_dir} has no studies")
  if cfg.num_epochs is not None and not train:
    positions = pad_to_global_batches(positions, cfg, process_count, -1)
  element = StudyElement(records, studies, encoder, cfg, train)
  return finish(grain.MapDataset.source(positions), element, cfg, train, process_index,
                 process_count)


def still_clips(index: ShardIndex, split: str, records: np.ndarray, length: int,
                frame: int = 0) -> tuple[np.ndarray, np.ndarray]:
  """One frame of each record repeated `length` times: the "single frame" level of the pooling
  ablation (the video tower sees no motion). -> (video (N, T, H, W, 3) uint8, mask (N, T))."""
  reader = _Records(index.shard_paths(split))
  out = []
  for r in records:
    record = reader[int(r)]
    i = min(frame, int(record["num_frames"]) - 1)
    out.append(clips.decode_frames(record["frames"], np.full((length,), i, np.int32)))
  return np.stack(out), np.ones((len(out), length), bool)


def to_global(batch: dict[str, np.ndarray], sharding) -> dict[str, Any]:
  """Per-process batch -> global jax.Arrays split along axis 0 by `sharding` (e.g.
  NamedSharding(mesh, P("data"))). Every process passes its own slice."""
  import jax
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
          for k, v in batch.items()}
