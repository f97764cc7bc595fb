"""Export embeddings for downstream work: per video, per study, per report section
(`python -m echoprime_jax.export`; the probe reads the folder).

Writes to DIR (study ids are the shards' pseudonyms; no PHI):
  videos.parquet          study_id, record, view (the shards' label, "" unknown), row; with
                          --views also predicted_view, view_probability
  video_embeddings.npy    (N, D) float32, L2-normalised: the video tower on each video's
                          deterministic clip (frame 0 onwards)
  view_probabilities.npy  (N, 11) coarse-view probabilities (with --views)
  studies.parquet         study_id, num_videos, has_report, single_video_row, row
  study_mean.npy          (M, D) the normalised mean of a study's video embeddings
  single_video.npy        (M, D) one video per study (its first A4C, else its first video)
  single_frame.npy        (M, D) the video tower on that video's frame 0 held still (no motion)
  report_embeddings.npy   (M, D) the text tower on the report's first window (zeros: none)
  study_sections.npy      (M, 15, D) section embeddings (with --mil: the trained aggregator's
                          best checkpoint; with --table: that fixed table), sections.json
                          their names
  export.json             what was exported with what (the probe's zero-shot reads the towers
                          from here)
single_frame / single_video / study_mean / study_sections are the four pooling levels of the
probe's ablation (`python -m echoprime_jax.probe --ablation`).
Embedding runs batched over every device (and process); the towers' pass over the split is
cached in DIR/cache/ with a fingerprint, so a rerun (or a run killed after it) reuses it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os

import numpy as np

log = logging.getLogger("echoprime_jax.export")

# the export folder's files (one home: the probe reads them by these names)
VIDEOS, STUDIES, MANIFEST, CACHE = "videos.parquet", "studies.parquet", "export.json", "cache"
VIDEO_EMBEDDINGS, VIEW_PROBABILITIES = "video_embeddings.npy", "view_probabilities.npy"
STUDY_MEAN, SINGLE_VIDEO, SINGLE_FRAME = "study_mean.npy", "single_video.npy", "single_frame.npy"
REPORT_EMBEDDINGS, STUDY_SECTIONS = "report_embeddings.npy", "study_sections.npy"
SECTION_NAMES = "sections.json"
FILES = (VIDEOS, STUDIES, MANIFEST, VIDEO_EMBEDDINGS, VIEW_PROBABILITIES, STUDY_MEAN,
         SINGLE_VIDEO, SINGLE_FRAME, REPORT_EMBEDDINGS, STUDY_SECTIONS, SECTION_NAMES)


@dataclasses.dataclass(frozen=True)
class ExportRequest:
  towers: str  # pretraining run folder (its best checkpoint's towers, its tokenizer) or an
  #             imported EchoPrime release (with `tokenizer`)
  data: str  # shards folder
  out: str  # export folder
  split: str = "val"
  mil: str = ""  # MIL run folder: section embeddings from its best checkpoint
  table: str = ""  # or an EchoPrime-format attention CSV as a fixed aggregator
  views: str = ""  # view-classifier run folder: predicted views
  batch: int = 32  # videos / texts per step over all devices
  section_len: int = 128  # tokens per report section
  tokenizer: str = ""  # tokenizer folder for an imported release's text tower


def _sections(req, emb, mesh) -> np.ndarray | None:
  """(M, S, D) section embeddings of the split's studies: the MIL run's aggregator (its best
  checkpoint) or a fixed table; None without either."""
  from flax import nnx

  from echoprime_jax.inference import attention_table
  from echoprime_jax.inference.load import load_run
  from echoprime_jax.inference.mil_pooling import SplitPooler
  from echoprime_jax.models import mil
  if req.mil:
    run = load_run(req.mil, mesh, stage="mil")
    model, max_videos = run.model, int(run.config.data.max_videos)
  elif req.table:
    model = mil.FixedTableMIL(attention_table.read_csv(req.table, emb.sections),
                              emb.video_embedding.shape[1])
    max_videos = max((len(rows) for rows in emb.videos_of()), default=1)  # every video
  else:
    return None
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  pooler = SplitPooler(graphdef, emb, batch_size=req.batch, max_videos=max_videos, mesh=mesh)
  return pooler(params, rest)["pooled"]


def _single_video(emb, views: np.ndarray) -> np.ndarray:
  """(M,) row of each study's single video for the pooling ablation: its first A4C clip (the
  view most analyses start from), else its first clip."""
  from data_prep.views import COARSE_VIEWS
  a4c = COARSE_VIEWS.index("A4C")
  out = np.zeros((emb.num_studies,), np.int64)
  for m, rows in enumerate(emb.videos_of()):
    preferred = rows[views[rows] == a4c]
    out[m] = (preferred if len(preferred) else rows)[0]
  return out


def export_split(req: ExportRequest, mesh=None) -> dict[str, int]:
  """Writes the export of `req.split` to `req.out` (see the module docstring) -> its counts:
  videos, studies, sections (0 without --mil / --table)."""
  import jax

  from echoprime_jax import parallel
  from echoprime_jax.data import pipeline
  from echoprime_jax.data.shards import ShardIndex
  from echoprime_jax.inference import embeddings as embeddings_lib
  from echoprime_jax.inference import frozen_towers

  from echoprime_jax.run import output_folder
  # a folder of ours (an earlier export) is refreshed; anything else non-empty is refused. It
  # is marked ours before the first file (the embedding cache) goes in.
  output_folder.check_replaceable(req.out, "export", overwrite=True)
  mesh = mesh if mesh is not None else parallel.make_mesh({"data": -1})
  if req.batch % jax.device_count():
    raise ValueError(f"--batch {req.batch} must be a multiple of the {jax.device_count()} "
                     "devices")
  index = ShardIndex(req.data)
  index.studies(req.split)  # the data first (cheap): a bad folder fails before the towers load
  towers = frozen_towers.load(req.towers, req.section_len, mesh, req.tokenizer)
  if jax.process_index() == 0:  # the inputs hold: from here on the folder is ours
    os.makedirs(req.out, exist_ok=True)
    output_folder.mark(req.out, "export")
  emb = embeddings_lib.cached_split(towers, index, req.split,
                                    os.path.join(req.out, CACHE, f"{req.split}.npz"),
                                    batch_size=req.batch, mesh=mesh)
  view_probs = None
  if req.views:
    from echoprime_jax.inference.view_predictor import ViewPredictor
    records, view_probs = ViewPredictor.from_run(req.views, mesh).predict_split(
        index, req.split, req.batch, mesh)
    if not np.array_equal(records, emb.video_record):
      raise ValueError(f"{req.views}: predicted {len(records)} videos, the export has "
                       f"{len(emb.video_record)}")
    # the aggregator reads the predicted views, as `interpret` does on a new study
    emb = dataclasses.replace(emb, video_view=view_probs.argmax(1).astype(np.int32))
  sections = _sections(req, emb, mesh)
  single = _single_video(emb, emb.video_view)
  clips, masks = pipeline.still_clips(index, req.split, emb.video_record[single],
                                      towers.clip_length)
  single_frame = embeddings_lib.embed_clips(towers.model, clips, masks, batch_size=req.batch,
                                            mesh=mesh)
  exported = {"videos": len(emb.video_study), "studies": emb.num_studies,
              "sections": 0 if sections is None else len(emb.sections)}
  if jax.process_index() != 0:
    return exported

  import shutil
  # every file is written to a staging folder first and moved in at the end, where files an
  # earlier export wrote and this one does not (view_probabilities, study_sections) go: a crash
  # leaves the previous export whole, a rerun leaves nothing stale
  staging = os.path.join(req.out, f".writing-{os.getpid()}")
  shutil.rmtree(staging, ignore_errors=True)  # ours: a crashed attempt of this process id
  os.makedirs(staging)
  try:
    _write(staging, req, emb, view_probs, sections, single, single_frame, towers)
  except BaseException:
    shutil.rmtree(staging, ignore_errors=True)
    raise
  for name in FILES:
    if os.path.exists(os.path.join(staging, name)):
      os.replace(os.path.join(staging, name), os.path.join(req.out, name))
    elif os.path.exists(os.path.join(req.out, name)):
      os.remove(os.path.join(req.out, name))  # ours (the folder carries our marker)
  os.rmdir(staging)
  return exported


def _write(out: str, req: ExportRequest, emb, view_probs, sections, single, single_frame,
           towers) -> None:
  """The export's files into `out` (process 0)."""
  import pyarrow as pa
  import pyarrow.parquet as pq

  from data_prep.views import COARSE_VIEWS
  from echoprime_jax.data.split_embeddings import study_mean
  n, m = len(emb.video_study), emb.num_studies
  name = lambda v: COARSE_VIEWS[v] if v >= 0 else ""
  columns = {"study_id": [str(emb.study_ids[s]) for s in emb.video_study],
             "record": emb.video_record.astype(np.int64),
             "view": [name(v) for v in emb.video_view],  # the shards' labels (-1: none)
             "row": np.arange(n, dtype=np.int64)}
  if view_probs is not None:
    columns["predicted_view"] = [name(v) for v in view_probs.argmax(1)]
    columns["view_probability"] = view_probs.max(1).astype(np.float32)
  pq.write_table(pa.table(columns), os.path.join(out, VIDEOS))
  if view_probs is not None:
    np.save(os.path.join(out, VIEW_PROBABILITIES), view_probs.astype(np.float32))
  np.save(os.path.join(out, VIDEO_EMBEDDINGS), emb.video_embedding)
  counts = np.bincount(emb.video_study, minlength=m)
  has_report = np.abs(emb.report_embedding).sum(1) > 0
  pq.write_table(pa.table({"study_id": [str(s) for s in emb.study_ids],
                           "num_videos": counts.astype(np.int64), "has_report": has_report,
                           "single_video_row": single, "row": np.arange(m, dtype=np.int64)}),
                 os.path.join(out, STUDIES))
  np.save(os.path.join(out, STUDY_MEAN), study_mean(emb))
  np.save(os.path.join(out, SINGLE_VIDEO), emb.video_embedding[single])
  np.save(os.path.join(out, SINGLE_FRAME), single_frame)
  np.save(os.path.join(out, REPORT_EMBEDDINGS), emb.report_embedding)
  if sections is not None:
    np.save(os.path.join(out, STUDY_SECTIONS), sections.astype(np.float32))
    with open(os.path.join(out, SECTION_NAMES), "w") as f:
      json.dump(list(emb.sections), f)
  with open(os.path.join(out, MANIFEST), "w") as f:
    json.dump({"towers": os.path.abspath(req.towers), "towers_step": towers.source.get("step", 0),
               "tokenizer": os.path.abspath(req.tokenizer) if req.tokenizer else "",
               "data": os.path.abspath(req.data), "split": req.split,
               "mil": os.path.abspath(req.mil) if req.mil else "",
               "table": os.path.abspath(req.table) if req.table else "",
               "views": os.path.abspath(req.views) if req.views else "",
               "videos": n, "studies": m}, f, indent=2)
