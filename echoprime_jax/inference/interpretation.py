"""One study interpreted: its videos embedded and classified by view, pooled per report section
by the MIL aggregator, each section's nearest candidates, the report and the measurements
(the library of `python -m echoprime_jax.interpret`, whose docstring describes the outputs).

Files are named only by number ("file #3"): no path, folder or file name of the study folder
is kept, and reasons are redacted of UIDs, dates and names (`study_reader`).
"""

from __future__ import annotations

import json
import logging
import math
import os

import numpy as np

log = logging.getLogger("echoprime_jax.interpret")

NEAREST_SHOWN = 5  # neighbours listed per measurement


def _pad_batch(arrays: list[np.ndarray], multiple: int) -> np.ndarray:
  n = len(arrays)
  padded = -(-n // multiple) * multiple
  stacked = np.stack(arrays)
  return np.concatenate([stacked, np.zeros((padded - n, *stacked.shape[1:]), stacked.dtype)])


def _resize(video: np.ndarray, size: int) -> np.ndarray:
  """(T, H, W, 3) uint8 -> (T, size, size, 3) (a view classifier trained at another size)."""
  from PIL import Image
  if video.shape[1] == size:
    return video
  return np.stack([np.asarray(Image.fromarray(f).resize((size, size), Image.BILINEAR))
                   for f in video])


def embed_videos(towers, study, mesh) -> np.ndarray:
  """The study's videos -> (N, D) L2-normalised video-tower embeddings (evaluation clips)."""
  import jax

  from echoprime_jax.inference import embeddings
  clips = [v.clip(towers.clip_length, towers.clip_stride) for v in study.videos]
  return embeddings.embed_clips(towers.model, np.stack([c for c, _ in clips]),
                                np.stack([m for _, m in clips]), batch_size=jax.device_count(),
                                mesh=mesh)


def predict_views(predictor, study, mesh) -> np.ndarray:
  """-> (N, 11) coarse-view probabilities of the study's videos."""
  import jax

  from echoprime_jax import parallel
  clips = [v.clip(predictor.frames, 1) for v in study.videos]
  n = len(clips)
  video = _pad_batch([_resize(c, predictor.image_size) for c, _ in clips], jax.device_count())
  mask = _pad_batch([m for _, m in clips], jax.device_count())
  return predictor.coarse_probabilities(video, mask, parallel.batch_sharding(mesh))[:n]


def _label_text(value: float, mode: str) -> str | float | None:
  from echoprime_jax.retrieval.labels import SEVERITY
  if value is None or math.isnan(value):
    return None
  if mode == "severity":
    return SEVERITY[int(value)]
  if mode == "binary":
    return "yes" if value >= 0.5 else "no"
  return float(value)


def retrieve(pooled: np.ndarray, sections: tuple[str, ...], db, k: int, match: str,
             thresholds: dict[str, float], consensus: int = 1) -> dict:
  """pooled (S, D) -> {"report", "report_sources", "measurements"} (see the module docstring)."""
  from echoprime_jax.retrieval import report_composer
  rows, scores = report_composer.section_neighbours(pooled[None], db, k, match=match,
                                                    section_names=sections)
  composed = report_composer.compose(rows, db, sections, consensus)[0]
  sources = {}
  for name, c in composed["sources"].items():
    j = sections.index(name)
    score = scores[0, j][list(rows[0, j]).index(c)]
    sources[name] = {"study_id": str(db.study_ids[c]), "score": float(score)}
  return {"report": composed["sections"], "report_sources": sources,
          "measurements": measurements(rows, scores, sections, db, k, thresholds)}


def measurements(rows: np.ndarray, scores: np.ndarray, sections: tuple[str, ...], db, k: int,
                 thresholds: dict[str, float]) -> dict:
  """Neighbours (1, S, k) rows and scores -> {label: measurement with its mode and the nearest
  labelled neighbours}."""
  from echoprime_jax.retrieval import report_composer
  measured = report_composer.measure(rows, db, sections, k, thresholds)[0]
  for rule in db.rules.rules:
    entry = measured[rule.name]
    j = sections.index(rule.section)
    nearest = []
    for c, s in zip(rows[0, j], scores[0, j]):
      value = db.labels[rule.name][c] if c >= 0 else math.nan
      if c >= 0 and not math.isnan(value):
        nearest.append({"study_id": str(db.study_ids[c]), "score": float(s),
                        "value": _label_text(float(value), rule.mode)})
      if len(nearest) == NEAREST_SHOWN:
        break
    entry.update(mode=rule.mode, nearest=nearest)
  return measured


def interpret_study(folder: str, *, model: str, index: str, views: str = "", k: int = 50,
                    match: str = "section", thresholds: dict[str, float] | None = None,
                    consensus: int = 1, mesh=None, progress: bool = True
                    ) -> tuple[dict, list[np.ndarray]]:
  """-> (result dict (the JSON), thumbnail strips per video)."""
  import jax

  from data_prep.views import COARSE_VIEWS
  from echoprime_jax import parallel
  from echoprime_jax.inference import attention_table, frozen_towers, study_reader
  from echoprime_jax.inference.load import load_run
  from echoprime_jax.inference.mil_pooling import pool_study
  from echoprime_jax.inference.view_predictor import ViewPredictor
  from echoprime_jax.render import study_page
  from echoprime_jax.retrieval.database import CandidateDatabase
  mesh = mesh if mesh is not None else parallel.make_mesh({"data": -1})
  # The aggregator first (small; its config names the towers and their frame size), then the
  # cheap checks (database, the study itself), then the towers.
  aggregator = load_run(model, mesh, stage="mil")
  db = CandidateDatabase.load(index)
  study = study_reader.read_study(folder, int(aggregator.config.towers.video.image_size),
                                  progress=progress)
  towers = frozen_towers.for_mil_run(aggregator, mesh)
  video_embedding = embed_videos(towers, study, mesh)
  n = len(study.videos)
  if views:
    probs = predict_views(ViewPredictor.from_run(views, mesh), study, mesh)
    view_ids = probs.argmax(1)
  else:
    log.warning("no --views run: the videos' views are unknown, so the aggregator sees no "
                "view features (it was trained with them)")
    probs, view_ids = None, np.full((n,), -1)
  pooled, attention = pool_study(aggregator.model, video_embedding, view_ids)
  sections = tuple(attention_table.TABLE_SECTIONS)
  result = {
      "videos": [{"number": v.number, "num_frames": v.num_frames, "fps": v.fps,
                  "colour": v.channels == 3,
                  "view": COARSE_VIEWS[view_ids[i]] if view_ids[i] >= 0 else "",
                  "view_probability": None if probs is None else float(probs[i].max())}
                 for i, v in enumerate(study.videos)],
      "not_used": [{"number": nb, "status": st, "reason": r} for nb, st, r in study.not_used],
      "sections": list(sections), "attention": attention.round(5).tolist(),
      "k": k, "match": match, "database_size": len(db),
      "consensus": consensus,
      **retrieve(pooled, sections, db, k, match, thresholds or {}, consensus),
      "models": {"mil": _base_name(model), "views": _base_name(views) if views else "",
                 "towers": _base_names(towers.source), "index": _base_name(index)},
      "devices": jax.device_count()}
  strips = [study_page.thumbnail_strip(v.thumbnails()) for v in study.videos]
  return result, strips


def _base_name(path: str) -> str:
  """A run folder's own name: enough to tell runs apart, no absolute path in the outputs."""
  return os.path.basename(os.path.normpath(os.path.abspath(path)))


def _base_names(obj):
  """`towers.source` with every path-like string (run folder, weight files) cut to its name."""
  if isinstance(obj, dict):
    return {k: _base_names(v) for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return [_base_names(v) for v in obj]
  if isinstance(obj, str) and os.sep in obj:
    return _base_name(obj)
  return obj


def summary_text(result: dict) -> str:
  """The console version: views, report, measurements."""
  lines = ["Videos: " + ", ".join(f"#{v['number']} {v['view'] or '?'}" for v in result["videos"]),
           "", "REPORT"]
  lines += [f"  {name}: {text}" for name, text in result["report"].items()]
  lines += ["", "MEASUREMENTS"]
  for name, m in result["measurements"].items():
    if m["mode"] == "regression":
      value = "—" if math.isnan(m["value"]) else f"{m['value']:.1f}"
    elif m["mode"] == "binary":
      value = f"{'present' if m['positive'] else 'absent'} (p={m['probability']:.2f})"
    else:
      value = f"{m['grade']} (expected grade {m['expected_grade']:.2f})"
    lines.append(f"  {name:<28} {value:<28} [{m['section']}, {m['neighbours']} neighbours]")
  return "\n".join(lines)


def _finite(obj):
  """NaN (a label no neighbour states) -> null, so the JSON is standard."""
  if isinstance(obj, dict):
    return {k: _finite(v) for k, v in obj.items()}
  if isinstance(obj, list):
    return [_finite(v) for v in obj]
  if isinstance(obj, float) and math.isnan(obj):
    return None
  return obj


OUTPUT_KIND = "interpretation"


def write_outputs(result: dict, strips: list[np.ndarray], out: str) -> None:
  """interpretation.json and report.html in the folder `out`, written whole (an earlier
  interpretation there replaced; a folder we did not write refused: `run.output_folder`)."""
  from echoprime_jax.render import study_page
  from echoprime_jax.run import output_folder
  with output_folder.atomic(out, OUTPUT_KIND, overwrite=True) as tmp:
    with open(os.path.join(tmp, "interpretation.json"), "w") as f:
      json.dump(_finite(result), f, indent=2, allow_nan=False)
    with open(os.path.join(tmp, "report.html"), "w") as f:
      f.write(study_page.render(result, strips))
