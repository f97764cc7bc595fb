"""Export embeddings for downstream work: per video, per study, per report section.

  python -m echoprime_jax.export --towers PRETRAIN_RUN --data SHARDS --split val --out DIR \
      [--mil MIL_RUN | --table TABLE.csv] [--views VIEW_RUN]

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

import argparse
import json
import logging
import os
import sys

import numpy as np

log = logging.getLogger("echoprime_jax.export")


def _sections(args, emb, mesh, out_dir: str) -> np.ndarray | None:
  from flax import nnx

  from echoprime_jax.models import mil, section_table
  from echoprime_jax.train import mil_stage
  dim = emb.video_embedding.shape[1]
  if args.mil:
    cfg, graphdef, params, rest, _ = mil_stage.restore_run(args.mil, dim, mesh)
  elif args.table:
    from configs import mil as mil_config
    cfg = mil_config.get_config("echoprime")
    fixed = mil.FixedTableMIL(section_table.read_csv(args.table, emb.sections), dim)
    graphdef, params, rest = nnx.split(fixed, nnx.Param, ...)
  else:
    return None
  with cfg.unlocked():
    cfg.eval_batch_size = args.batch
  evaluator = mil_stage.Evaluator(cfg, emb, graphdef, mesh, out_dir, args.split)
  return evaluator.outputs(params, rest)["pooled"]


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


def run(args) -> int:
  import dataclasses

  import jax

  from echoprime_jax import embeddings as embeddings_lib
  from echoprime_jax import parallel
  from echoprime_jax.data import pipeline
  from echoprime_jax.data.shards import ShardIndex
  from echoprime_jax.train import frozen_towers
  from data_prep.views import COARSE_VIEWS

  mesh = parallel.make_mesh({"data": -1})
  if args.batch % jax.device_count():
    raise SystemExit(f"--batch {args.batch} must be a multiple of the {jax.device_count()} "
                     "devices")
  towers = frozen_towers.from_pretrain_run(args.towers, args.section_len, mesh)
  index = ShardIndex(args.data)
  emb = embeddings_lib.cached_split(towers, index, args.split,
                                    os.path.join(args.out, "cache", f"{args.split}.npz"),
                                    batch_size=args.batch, mesh=mesh)
  view_probs = None
  if args.views:
    from echoprime_jax.view_predictor import ViewPredictor
    records, view_probs = ViewPredictor.from_run(args.views, mesh).predict_split(
        index, args.split, args.batch, mesh)
    if not np.array_equal(records, emb.video_record):
      raise SystemExit(f"{args.views}: predicted {len(records)} videos, the export has "
                       f"{len(emb.video_record)}")
    # the aggregator reads the predicted views, as `interpret` does on a new study
    emb = dataclasses.replace(emb, video_view=view_probs.argmax(1).astype(np.int32))
  sections = _sections(args, emb, mesh, args.out)
  single = _single_video(emb, emb.video_view)
  clips, masks = pipeline.still_clips(index, args.split, emb.video_record[single],
                                      towers.clip_length)
  single_frame = embeddings_lib.embed_clips(towers.model, clips, masks, batch_size=args.batch,
                                            mesh=mesh)
  if jax.process_index() != 0:
    return 0

  import pyarrow as pa
  import pyarrow.parquet as pq
  os.makedirs(args.out, exist_ok=True)
  n, m = len(emb.video_study), emb.num_studies
  name = lambda v: COARSE_VIEWS[v] if v >= 0 else ""
  columns = {"study_id": [str(emb.study_ids[s]) for s in emb.video_study],
             "record": emb.video_record.astype(np.int64),
             "view": [name(v) for v in emb.video_view],  # the shards' labels (-1: none)
             "row": np.arange(n, dtype=np.int64)}
  if view_probs is not None:
    columns["predicted_view"] = [name(v) for v in view_probs.argmax(1)]
    columns["view_probability"] = view_probs.max(1).astype(np.float32)
  pq.write_table(pa.table(columns), os.path.join(args.out, "videos.parquet"))
  if view_probs is not None:
    np.save(os.path.join(args.out, "view_probabilities.npy"), view_probs.astype(np.float32))
  np.save(os.path.join(args.out, "video_embeddings.npy"), emb.video_embedding)
  counts = np.bincount(emb.video_study, minlength=m)
  mean = np.zeros((m, emb.video_embedding.shape[1]), np.float32)
  np.add.at(mean, emb.video_study, emb.video_embedding)
  mean /= np.maximum(np.linalg.norm(mean, axis=1, keepdims=True), 1e-12)
  has_report = np.abs(emb.report_embedding).sum(1) > 0
  pq.write_table(pa.table({"study_id": [str(s) for s in emb.study_ids],
                           "num_videos": counts.astype(np.int64), "has_report": has_report,
                           "single_video_row": single, "row": np.arange(m, dtype=np.int64)}),
                 os.path.join(args.out, "studies.parquet"))
  np.save(os.path.join(args.out, "study_mean.npy"), mean)
  np.save(os.path.join(args.out, "single_video.npy"), emb.video_embedding[single])
  np.save(os.path.join(args.out, "single_frame.npy"), single_frame)
  np.save(os.path.join(args.out, "report_embeddings.npy"), emb.report_embedding)
  if sections is not None:
    np.save(os.path.join(args.out, "study_sections.npy"), sections.astype(np.float32))
    with open(os.path.join(args.out, "sections.json"), "w") as f:
      json.dump(list(emb.sections), f)
  with open(os.path.join(args.out, "export.json"), "w") as f:
    json.dump({"towers": os.path.abspath(args.towers), "towers_step": towers.source["step"],
               "data": os.path.abspath(args.data), "split": args.split,
               "mil": os.path.abspath(args.mil) if args.mil else "",
               "table": os.path.abspath(args.table) if args.table else "",
               "views": os.path.abspath(args.views) if args.views else "",
               "videos": n, "studies": m}, f, indent=2)
  print(f"exported {n} videos and {m} studies of split {args.split!r} to {args.out}"
        + ("" if sections is None else f" (+ {len(emb.sections)} section embeddings each)"))
  return 0


def main(argv: list[str] | None = None) -> int:
  p = argparse.ArgumentParser(prog="python -m echoprime_jax.export", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--towers", required=True,
                 help="pretraining run folder (configs/pretrain.py --workdir): its best "
                      "checkpoint's video and text towers and its tokenizer")
  p.add_argument("--data", required=True, help="data_prep output folder (shards)")
  p.add_argument("--split", default="val", help="split to export (default val)")
  p.add_argument("--out", required=True, help="output folder")
  group = p.add_mutually_exclusive_group()
  group.add_argument("--mil", default="", help="MIL run folder (configs/mil.py --workdir): "
                     "section embeddings from its best checkpoint")
  group.add_argument("--table", default="", help="EchoPrime-format attention CSV: section "
                     "embeddings by that fixed table")
  p.add_argument("--views", default="",
                 help="view-classifier run folder (configs/views.py --workdir): adds each "
                      "video's predicted view and its probability; the aggregator then reads "
                      "the predicted views instead of the shards' labels")
  p.add_argument("--batch", type=int, default=32,
                 help="videos / texts per step over all devices (default 32)")
  p.add_argument("--section_len", type=int, default=128,
                 help="tokens per report section (default 128, the MIL stage's)")
  args = p.parse_args(argv)
  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
  logging.getLogger("absl").setLevel(logging.WARNING)  # Orbax's per-restore chatter
  from echoprime_jax import xla_flags
  xla_flags.apply()
  return run(args)


if __name__ == "__main__":
  sys.exit(main())
