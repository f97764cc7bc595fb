"""Frozen-tower embeddings of one split, computed once and cached: the input of the MIL stage,
retrieval and probing.

Per video: the video tower's embedding of its deterministic clip (frame 0 onwards, the
reference's inference clip), L2-normalised, with its study and view. Per study: the text
tower's embedding of the whole report (its first window: what EchoPrime's candidate database
holds) and of each report section ("[CLS] <Section>: <text> [SEP]", L2-normalised) and
an id per distinct section text (studies whose section reads the same share the id: they are
not negatives of each other in the MIL loss, and retrieval ranks distinct texts).

Cache: `DIR/<split>.npz` + `DIR/<split>.json` (the fingerprint: tower source, data folder,
clip and text settings). A cache whose fingerprint differs from the request is recomputed,
never silently reused. Multi-host: every process computes its slice of the videos and text
rows; the results are gathered and process 0 writes the files; every process then holds the
whole split in memory (embeddings are small: 2 KB per video at 512-d).
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any, Callable

import numpy as np

from echoprime_jax.data.split_embeddings import SplitEmbeddings, meta_path

log = logging.getLogger("echoprime_jax.embeddings")


def cached(path: str, fingerprint: dict[str, Any],
           compute: Callable[[], SplitEmbeddings]) -> SplitEmbeddings:
  """The cache at `path` if its fingerprint equals `fingerprint`, else `compute()` (saved by
  process 0; the others wait for it)."""
  import jax
  fingerprint = json.loads(json.dumps(fingerprint, sort_keys=True, default=str))
  if os.path.isfile(path) and os.path.isfile(meta_path(path)):
    with open(meta_path(path)) as f:
      if json.load(f) == fingerprint:
        log.info("embeddings from the cache %s", path)
        return SplitEmbeddings.load(path)
    log.info("%s was computed with other settings: recomputing", path)
  out = compute()
  if jax.process_index() == 0:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    out.save(path, fingerprint)
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    multihost_utils.sync_global_devices(f"embeddings {path}")
  return out


def cached_split(towers, index, split: str, path: str, *, batch_size: int, mesh,
                 dtype: str = "float32") -> SplitEmbeddings:
  """`compute` with frozen towers (`inference.frozen_towers.FrozenTowers`) through the cache at
  `path`, fingerprinted by the towers' source, the data folder, the split and the clip and
  text settings (the MIL stage and the export share one cache format)."""
  fingerprint = {"towers": towers.source, "data": os.path.abspath(index.data_dir),
                 "split": split, "clip_length": towers.clip_length,
                 "clip_stride": towers.clip_stride, "frame_size": towers.frame_size,
                 "section_len": towers.encoder.section_len, "dtype": dtype, "format": 2}
  return cached(path, fingerprint, lambda: compute(
      towers.model, towers.encoder, index, split, clip_length=towers.clip_length,
      clip_stride=towers.clip_stride, frame_size=towers.frame_size, batch_size=batch_size,
      mesh=mesh, dtype=dtype))


def video_embedder(graphdef, dtype: str = "float32"):
  """-> jitted embed(state, video (B, T, H, W, 3) uint8, frame_mask (B, T) bool) -> (B, D)
  L2-normalised video-tower embeddings of a two-tower model split as (graphdef, state)."""
  import jax
  import jax.numpy as jnp
  from flax import nnx

  from echoprime_jax import losses
  from echoprime_jax.data.normalize import normalize_video

  @jax.jit
  def embed(state, video, frame_mask):
    m = nnx.merge(graphdef, state)
    return losses.l2_normalize(m.embed_video(normalize_video(video, frame_mask,
                                                             jnp.dtype(dtype))))
  return embed


def text_embedder(graphdef):
  """-> jitted embed(state, ids (B, L) int32, mask (B, L)) -> (B, D) L2-normalised text-tower
  embeddings of a two-tower model split as (graphdef, state)."""
  import jax
  from flax import nnx

  from echoprime_jax import losses

  @jax.jit
  def embed(state, ids, mask):
    return losses.l2_normalize(nnx.merge(graphdef, state).embed_text(ids, mask))
  return embed


def embed_in_batches(embed, state, arrays: dict[str, np.ndarray], *, batch_size: int, mesh,
                     desc: str = "", progress: bool = False) -> np.ndarray:
  """Rows held in memory (the same on every process) -> embed(state, **batch) of every row,
  (N, D) float32. Batches of `batch_size` (global) are padded (with row 0), split over the
  processes and gathered back."""
  import jax
  from tqdm import tqdm

  from echoprime_jax import parallel
  from echoprime_jax.data import pipeline
  from echoprime_jax.inference.batches import gather
  n = len(next(iter(arrays.values())))
  padded = max(-(-n // batch_size), 1) * batch_size
  arrays = {k: np.concatenate([a, np.repeat(a[:1], padded - n, 0)]) for k, a in arrays.items()}
  sharding = parallel.batch_sharding(mesh)
  per_process = batch_size // jax.process_count()
  lo = jax.process_index() * per_process
  out = []
  for start in tqdm(range(0, padded, batch_size), desc=desc, unit="batch",
                    disable=not (progress and jax.process_index() == 0)):
    sl = slice(start + lo, start + lo + per_process)
    g = pipeline.to_global({k: a[sl] for k, a in arrays.items()}, sharding)
    out.append(gather({"e": embed(state, **g)})["e"])
  return np.concatenate(out)[:n].astype(np.float32)


def _replicated_state(model, mesh):
  import jax
  from flax import nnx

  from echoprime_jax import parallel
  model.eval()
  graphdef, state = nnx.split(model)
  return graphdef, jax.device_put(state, parallel.replicated(mesh))


def embed_clips(model, video: np.ndarray, frame_mask: np.ndarray, *, batch_size: int, mesh,
                dtype: str = "float32") -> np.ndarray:
  """Clips in memory -> (N, D) L2-normalised video-tower embeddings; video (N, T, H, W, 3)
  uint8, frame_mask (N, T) (see `embed_in_batches`)."""
  graphdef, state = _replicated_state(model, mesh)
  return embed_in_batches(video_embedder(graphdef, dtype), state,
                          {"video": video, "frame_mask": frame_mask}, batch_size=batch_size,
                          mesh=mesh)


def embed_texts(model, ids: np.ndarray, mask: np.ndarray, *, batch_size: int, mesh
                ) -> np.ndarray:
  """Token rows in memory -> (N, D) L2-normalised text-tower embeddings."""
  graphdef, state = _replicated_state(model, mesh)
  return embed_in_batches(text_embedder(graphdef), state, {"ids": ids, "mask": mask},
                          batch_size=batch_size, mesh=mesh)


def compute(model, encoder, index, split: str, *, clip_length: int, clip_stride: int,
            frame_size: int, batch_size: int, mesh, dtype: str = "float32",
            sections: tuple[str, ...] | None = None, progress: bool = True
            ) -> SplitEmbeddings:
  """Embeds every video and every report section of `split` with a frozen two-tower `model`
  (`two_tower.TwoTower`, put in evaluation mode here). batch_size: global, videos or text rows
  per step; sections: the section names kept (default: the 15 of EchoPrime's table)."""
  import jax
  from tqdm import tqdm

  from echoprime_jax import parallel
  from echoprime_jax.data import pipeline
  from echoprime_jax.data.tokenizer import SECTION_ORDER
  from echoprime_jax.inference.attention_table import TABLE_SECTIONS
  from echoprime_jax.inference.batches import predict_all

  sections = tuple(sections or TABLE_SECTIONS)
  graphdef, state = _replicated_state(model, mesh)
  sharding = parallel.batch_sharding(mesh)
  per_process = batch_size // jax.process_count()
  show = progress and jax.process_index() == 0

  embed_video = video_embedder(graphdef, dtype)
  embed_text = text_embedder(graphdef)

  # -- videos: the evaluation clip pipeline (padded to whole global batches)
  pcfg = pipeline.PipelineConfig(batch_size=per_process, clip_length=clip_length,
                                 clip_stride=clip_stride, frame_size=frame_size, augment=None,
                                 num_epochs=1, require_report=False, workers=0)
  studies = index.studies(split)
  n_videos = sum(len(s.records) for s in studies)
  with tqdm(total=n_videos, desc=f"embed {split} videos", unit="video",
            disable=not show) as bar:
    video = predict_all(lambda g: {"e": embed_video(state, g["video"], g["frame_mask"])},
                        pipeline.clip_dataset(index, split, None, pcfg, train=False),
                        sharding, inputs=("video", "frame_mask"),
                        carry=("study", "view", "record"), order_by="record",
                        progress=bar.update)

  # -- report sections (distinct texts get one id each) and whole reports; rows split over
  # processes in global batches
  rows = [SECTION_ORDER.index(s) for s in sections]
  ids_list, mask_list, where = [], [], []
  text_id = np.full((len(studies), len(sections)), -1, np.int32)
  distinct: dict[bytes, int] = {}
  for m, study in enumerate(studies):
    ids, mask, present = encoder.encode_sections(study.sections)
    for j, r in enumerate(rows):
      if present[r]:
        key = ids[r].tobytes()
        text_id[m, j] = distinct.setdefault(key, len(distinct))
        ids_list.append(ids[r])
        mask_list.append(mask[r])
        where.append((m, j))
  dim = int(video["e"].shape[1]) if len(video["e"]) else model.config.text.out_dim

  def embed_rows(ids_rows: list[np.ndarray], mask_rows: list[np.ndarray], what: str
                 ) -> np.ndarray:
    if not ids_rows:
      return np.zeros((0, dim), np.float32)
    return embed_in_batches(embed_text, state, {"ids": np.stack(ids_rows),
                                                "mask": np.stack(mask_rows)},
                            batch_size=batch_size, mesh=mesh, desc=f"embed {split} {what}",
                            progress=show)

  section_embedding = np.zeros((len(studies), len(sections), dim), np.float32)
  for (m, j), t in zip(where, embed_rows(ids_list, mask_list, "sections")):
    section_embedding[m, j] = t
  encoded = [encoder.encode(s.sections) for s in studies]  # first window, as at evaluation
  report_embedding = embed_rows([e[0] for e in encoded], [e[1] for e in encoded], "reports")
  report_embedding[[not s.has_report for s in studies]] = 0.0
  return SplitEmbeddings(
      video_embedding=video["e"].astype(np.float32), video_study=video["study"].astype(np.int32),
      video_view=video["view"].astype(np.int32), video_record=video["record"].astype(np.int64),
      section_embedding=section_embedding, section_text=text_id,
      study_ids=np.asarray([s.study_id for s in studies], str), sections=sections,
      report_embedding=report_embedding.astype(np.float32))
