"""Candidate database for retrieval-augmented interpretation: build it, evaluate it.

  python -m echoprime_jax.index build --mil_run RUN --out DB [--split train] [--index auto]
  python -m echoprime_jax.index evaluate --db DB --mil_run RUN [--split val] [--k 50]

build: the studies of a split (default: the MIL run's training split) become candidates: their
report and section embeddings (the text tower's, from the run's embedding cache), sections, and
labels extracted by a rules file (default `echoprime_jax/retrieval/label_rules.json`); an index
over the embeddings (exact below 20,000 candidates, ScaNN above, or forced with --index).
evaluate: the held-out split's section embeddings (the MIL run's export) query the database;
retrieved reports and kNN measurements are scored against the studies' own reports and against
a random-neighbour / mean / majority baseline (`retrieval/evaluate.py`). Prints a table, writes
JSON with --out and every held-out study's outcomes as CSV with --queries_out.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import sys

import numpy as np

log = logging.getLogger("echoprime_jax.index")


def _run_config(run: str) -> dict:
  from echoprime_jax.train import frozen_towers
  try:
    return frozen_towers.run_config(run, "mil").to_dict()
  except (FileNotFoundError, ValueError) as e:
    raise SystemExit(str(e)) from None


def _run_file(run: str, *parts: str) -> str:
  """A file a MIL run wrote (embeddings/, export/), or a clear exit."""
  path = os.path.join(run, *parts)
  if not os.path.isfile(path):
    raise SystemExit(f"{path}: not found (has the MIL stage run to the end for this split?)")
  return path


def _split_reports(data_dir: str, split: str, study_ids) -> list[dict[str, str]]:
  from echoprime_jax.data.shards import ShardIndex
  by_id = {s.study_id: s.sections for s in ShardIndex(data_dir).studies(split)}
  missing = [s for s in study_ids if s not in by_id]
  if missing:
    raise SystemExit(f"{data_dir}: {len(missing)} studies of the embeddings are not in split "
                     f"{split!r} (another data folder?)")
  return [by_id[s] for s in study_ids]


def build(args) -> int:
  from echoprime_jax.embeddings import SplitEmbeddings
  from echoprime_jax.retrieval import database
  cfg = _run_config(args.mil_run)
  split = args.split or cfg["data"]["train_split"]
  path = _run_file(args.mil_run, "embeddings", f"{split}.npz")
  emb = SplitEmbeddings.load(path)
  if emb.report_embedding is None:
    raise SystemExit(f"{path}: made by an older version without report embeddings; delete "
                     "the run's embeddings/ folder and rerun the MIL stage")
  sections = _split_reports(cfg["data"]["dir"], split, emb.study_ids)
  options = {}
  if args.index != "exact":
    options = {k: v for k, v in dict(num_leaves=args.leaves, leaves_to_search=args.search_leaves,
                                     reorder=args.reorder).items() if v}
  db = database.build(emb.study_ids, emb.report_embedding, sections, args.rules, args.index,
                      section_names=emb.sections, section_embeddings=emb.section_embedding,
                      **options)
  db.save(args.out, args.rules)
  counts = {k: int(np.sum(~np.isnan(v))) for k, v in db.labels.items()}
  print(f"{len(db)} candidates ({db.index.kind} index) -> {args.out}; labels stated: {counts}")
  return 0


def evaluate(args) -> int:
  from echoprime_jax.retrieval import evaluate as evaluate_lib
  from echoprime_jax.retrieval.database import CandidateDatabase
  cfg = _run_config(args.mil_run)
  split = args.split or cfg["data"]["eval_split"]
  z = np.load(_run_file(args.mil_run, "export", f"{split}_sections.npz"))
  db = CandidateDatabase.load(args.db)
  truth = _split_reports(cfg["data"]["dir"], split, z["study_ids"])
  outcomes = evaluate_lib.per_query(db, z["section_embedding"],
                                    tuple(str(s) for s in z["sections"]), truth, k=args.k,
                                    match=args.match, consensus=args.consensus)
  metrics = {**evaluate_lib.summarise(outcomes), "queries": float(len(truth)),
             "candidates": float(len(db))}
  width = max(len(k) for k in metrics)
  for key, value in metrics.items():
    print(f"{key:<{width}}  {value:.4f}")
  if args.out:
    with open(args.out + ".tmp", "w") as f:
      json.dump(metrics, f, indent=2)
    os.replace(args.out + ".tmp", args.out)
  if args.queries_out:
    with open(args.queries_out + ".tmp", "w", newline="") as f:
      writer = csv.writer(f)
      writer.writerow(["study_id", *outcomes])
      for i, study in enumerate(z["study_ids"]):
        writer.writerow([str(study), *(f"{v[i]:.6g}" for v in outcomes.values())])
    os.replace(args.queries_out + ".tmp", args.queries_out)
  return 0


def main(argv: list[str] | None = None) -> int:
  p = argparse.ArgumentParser(prog="python -m echoprime_jax.index", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  sub = p.add_subparsers(dest="command", required=True)
  b = sub.add_parser("build", help="build a candidate database from a MIL run's embeddings")
  b.add_argument("--mil_run", required=True, help="the --workdir of a configs/mil.py run")
  b.add_argument("--out", required=True, help="database folder to write")
  b.add_argument("--split", default="", help="split of candidates (default: the run's train)")
  from echoprime_jax.retrieval.labels import DEFAULT_RULES
  b.add_argument("--rules", default=DEFAULT_RULES, help="label rules JSON (default: built-in)")
  b.add_argument("--index", default="auto", choices=("auto", "exact", "scann"),
                 help="search index: exact below 20,000 candidates with auto")
  b.add_argument("--leaves", type=int, default=0, help="ScaNN tree leaves (0: ~sqrt(N))")
  b.add_argument("--search_leaves", type=int, default=0,
                 help="ScaNN leaves searched per query (0: ~5%% of the leaves)")
  b.add_argument("--reorder", type=int, default=0,
                 help="ScaNN candidates re-scored exactly (0: 250)")
  e = sub.add_parser("evaluate", help="score retrieved reports and kNN measurements")
  e.add_argument("--db", required=True, help="database folder (from build)")
  e.add_argument("--mil_run", required=True, help="the MIL run whose export holds the queries")
  e.add_argument("--split", default="", help="query split (default: the run's eval split)")
  e.add_argument("--k", type=int, default=50, help="neighbours per kNN measurement (50)")
  e.add_argument("--match", default="section", choices=("section", "report"),
                 help="each section's query searches the candidates' same-section text "
                      "embeddings (section, what the MIL stage trains for) or their whole-report "
                      "embeddings (report, EchoPrime's database)")
  e.add_argument("--consensus", type=int, default=1,
                 help="compose each section from the nearest neighbour having it (1, "
                      "EchoPrime's rule) or from the medoid of the N nearest having it")
  e.add_argument("--out", default="", help="write the metrics as JSON here")
  e.add_argument("--queries_out", default="",
                 help="write every held-out study's outcomes as CSV here (one row per study, "
                      "its pseudonym and one column per figure, nan where one does not apply; "
                      "the figures are the columns' means): for intervals over studies")
  args = p.parse_args(argv)
  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
  logging.getLogger("absl").setLevel(logging.WARNING)
  return build(args) if args.command == "build" else evaluate(args)


if __name__ == "__main__":
  sys.exit(main())
