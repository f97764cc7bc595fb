"""Interpret one study: DICOM folder -> report, measurements, and the evidence behind them.

  python -m echoprime_jax.interpret STUDY_DIR --model MIL_RUN --index DB --out DIR \\
      [--views VIEW_RUN] [--k 50] [--match section|report] [--consensus 1] [--thresholds FILE]

STUDY_DIR -> data prep's reader and preprocessing (`study_reader.py`) -> the video tower (the
towers the MIL run was trained on) -> views (a view-classifier run; without one the views are
unknown and the aggregator sees no view features) -> the MIL aggregator's per-section pooling
and attention -> each section's nearest candidates in the database (`index build`) -> the
report (per section, the nearest candidate having it) and the measurements (kNN over each
label's own section's neighbours). Printed, and written to DIR:
  interpretation.json   videos (view, probability), attention (section x video), report with
                        the candidate each section came from, measurements with their nearest
                        neighbours, files not used and why, the models used (folder base names)
  report.html           the same as one self-contained page (thumbnails, attention heatmap,
                        report, measurements with neighbours)
Files are named only by number ("file #3": position in file-name order), in the JSON, the page,
the console and error messages alike: study folders and files are often named after the
patient, so no path, folder or file name of STUDY_DIR is printed or written, and reasons are
redacted of UIDs, dates and names.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys

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

  from echoprime_jax import embeddings
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


def pool_sections(mil_cfg, graphdef, params, rest, video_embedding: np.ndarray,
                  views: np.ndarray, mesh) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
  """One study through the MIL aggregator -> (pooled (S, D), attention (S, N), sections)."""
  import jax

  from echoprime_jax.embeddings import SplitEmbeddings
  from echoprime_jax.models import section_table
  from echoprime_jax.train import mil_stage
  n, d = video_embedding.shape
  sections = tuple(section_table.TABLE_SECTIONS)
  one = SplitEmbeddings(video_embedding.astype(np.float32), np.zeros((n,), np.int32),
                        views.astype(np.int32), np.arange(n, dtype=np.int64),
                        np.zeros((1, len(sections), d), np.float32),
                        np.full((1, len(sections)), -1, np.int32), np.asarray(["query"]),
                        sections)
  cfg = mil_cfg.copy_and_resolve_references()
  with cfg.unlocked():
    cfg.eval_batch_size = jax.device_count()
    cfg.data.max_videos = max(int(cfg.data.max_videos), n)  # attention is over every video
  evaluator = mil_stage.Evaluator(cfg, one, graphdef, mesh, "", "query")
  out = evaluator.outputs(params, rest)
  order = out["video_index"][0][out["video_mask"][0]]
  attention = np.zeros((len(sections), n), np.float32)
  attention[:, order] = out["attention"][0][:, out["video_mask"][0]]
  return out["pooled"][0], attention, sections


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
  measured = report_composer.measure(rows, db, sections, k, thresholds)[0]
  sources = {}
  for name, c in composed["sources"].items():
    j = sections.index(name)
    score = scores[0, j][list(rows[0, j]).index(c)]
    sources[name] = {"study_id": str(db.study_ids[c]), "score": float(score)}
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
  return {"report": composed["sections"], "report_sources": sources, "measurements": measured}


def interpret_study(folder: str, *, model: str, index: str, views: str = "", k: int = 50,
                    match: str = "section", thresholds: dict[str, float] | None = None,
                    consensus: int = 1, mesh=None, progress: bool = True
                    ) -> tuple[dict, list[np.ndarray]]:
  """-> (result dict (the JSON), thumbnail strips per video)."""
  import jax

  from data_prep.views import COARSE_VIEWS
  from echoprime_jax import parallel, report_page, study_reader, view_predictor
  from echoprime_jax.retrieval.database import CandidateDatabase
  from echoprime_jax.train import frozen_towers, mil_stage
  mesh = mesh if mesh is not None else parallel.make_mesh({"data": -1})
  # The cheap checks first (run folders, database, the study itself), then the models.
  mil_cfg = frozen_towers.run_config(model, "mil")
  towers_cfg = (frozen_towers.pretrain_config(mil_cfg.towers_from) if mil_cfg.towers_from
                else mil_cfg)
  db = CandidateDatabase.load(index)
  study = study_reader.read_study(folder, int(towers_cfg.towers.video.image_size),
                                  progress=progress)
  towers = frozen_towers.from_mil_run(model, mesh)
  video_embedding = embed_videos(towers, study, mesh)
  n = len(study.videos)
  if views:
    probs = predict_views(view_predictor.ViewPredictor.from_run(views, mesh), study, mesh)
    view_ids = probs.argmax(1)
  else:
    log.warning("no --views run: the videos' views are unknown, so the aggregator sees no "
                "view features (it was trained with them)")
    probs, view_ids = None, np.full((n,), -1)
  cfg, graphdef, params, rest, _ = mil_stage.restore_run(model, video_embedding.shape[1], mesh)
  pooled, attention, sections = pool_sections(cfg, graphdef, params, rest, video_embedding,
                                              view_ids, mesh)
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
  strips = [report_page.thumbnail_strip(v.thumbnails()) for v in study.videos]
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


def main(argv: list[str] | None = None) -> int:
  p = argparse.ArgumentParser(prog="python -m echoprime_jax.interpret", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("study_dir", help="folder with one study's DICOM files")
  p.add_argument("--model", required=True,
                 help="MIL run folder (configs/mil.py --workdir); its towers (the pretraining "
                      "run it names, or its converted weights) embed the videos")
  p.add_argument("--index", required=True,
                 help="candidate database folder (python -m echoprime_jax.index build)")
  p.add_argument("--out", required=True, help="folder for interpretation.json and report.html")
  p.add_argument("--views", default="",
                 help="view-classifier run folder (configs/views.py --workdir); without it "
                      "the views are unknown")
  p.add_argument("--k", type=int, default=50, help="neighbours per measurement (default 50)")
  p.add_argument("--match", default="section", choices=("section", "report"),
                 help="search each section against the candidates' same-section embeddings "
                      "(section, default) or their whole-report embeddings (report)")
  p.add_argument("--consensus", type=int, default=1,
                 help="each report section from the nearest neighbour having it (1, "
                      "EchoPrime's rule) or the medoid of the N nearest having it")
  p.add_argument("--thresholds", default="",
                 help="JSON {label: threshold} for binary labels (default 0.5 each)")
  args = p.parse_args(argv)
  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
  logging.getLogger("absl").setLevel(logging.WARNING)
  from echoprime_jax import report_page, study_reader, xla_flags
  xla_flags.apply()
  thresholds = {}
  if args.thresholds:
    with open(args.thresholds) as f:
      thresholds = {str(k): float(v) for k, v in json.load(f).items()}
  try:
    result, strips = interpret_study(args.study_dir, model=args.model, index=args.index,
                                     views=args.views, k=args.k, match=args.match,
                                     thresholds=thresholds, consensus=args.consensus)
  except (study_reader.StudyReadError, FileNotFoundError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  os.makedirs(args.out, exist_ok=True)
  with open(os.path.join(args.out, "interpretation.json"), "w") as f:
    json.dump(_finite(result), f, indent=2, allow_nan=False)
  with open(os.path.join(args.out, "report.html"), "w") as f:
    f.write(report_page.render(result, strips))
  print(summary_text(result))
  print("\nwrote interpretation.json and report.html to the --out folder")
  return 0


def _finite(obj):
  """NaN (a label no neighbour states) -> null, so the JSON is standard."""
  if isinstance(obj, dict):
    return {k: _finite(v) for k, v in obj.items()}
  if isinstance(obj, list):
    return [_finite(v) for v in obj]
  if isinstance(obj, float) and math.isnan(obj):
    return None
  return obj


if __name__ == "__main__":
  sys.exit(main())
