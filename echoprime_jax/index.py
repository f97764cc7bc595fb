"""Candidate database for retrieval-augmented interpretation: build it, evaluate it.

  python -m echoprime_jax.index build --mil_run RUN --out DB [--split train] [--index auto]
  python -m echoprime_jax.index evaluate --db DB --mil_run RUN [--split val] [--k 50]

build: the studies of a split (default: the MIL run's training split) become candidates: their
report and section embeddings (the text tower's, from the run's embedding cache), sections, and
labels extracted by a rules file (default `echoprime_jax/retrieval/label_rules.json`); an index
over the embeddings (exact below 20,000 candidates, ScaNN above, or forced with --index).
evaluate: the held-out split's section embeddings (the MIL run's export) query the database;
retrieved reports and kNN measurements are scored against the studies' own reports and against
a random-neighbour / mean / majority baseline. Prints a table, writes JSON with --out and every
held-out study's outcomes as CSV with --queries_out. The library: `retrieval/from_runs.py`
(build), `evaluation/retrieval_figures.py` (evaluate).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

import numpy as np


def build(args) -> int:
  from echoprime_jax.retrieval import from_runs
  db = from_runs.build_database(args.mil_run, args.out, split=args.split, rules=args.rules,
                                index=args.index, overwrite=args.overwrite,
                                num_leaves=args.leaves,
                                leaves_to_search=args.search_leaves, reorder=args.reorder)
  counts = {k: int(np.sum(~np.isnan(v))) for k, v in db.labels.items()}
  print(f"{len(db)} candidates ({db.index.kind} index) -> {args.out}; labels stated: {counts}")
  return 0


def evaluate(args) -> int:
  from echoprime_jax.evaluation import retrieval_figures
  metrics, outcomes, study_ids = retrieval_figures.evaluate_database(
      args.db, args.mil_run, split=args.split, k=args.k, match=args.match,
      consensus=args.consensus)
  width = max(len(k) for k in metrics)
  for key, value in metrics.items():
    print(f"{key:<{width}}  {value:.4f}")
  if args.out:
    with open(args.out + ".tmp", "w") as f:
      json.dump(metrics, f, indent=2)
    os.replace(args.out + ".tmp", args.out)
  if args.queries_out:
    retrieval_figures.write_outcomes_csv(args.queries_out, study_ids, outcomes)
  return 0


def main(argv: list[str] | None = None) -> int:
  p = argparse.ArgumentParser(prog="python -m echoprime_jax.index", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  sub = p.add_subparsers(dest="command", required=True)
  b = sub.add_parser("build", help="build a candidate database from a MIL run's embeddings")
  b.add_argument("--mil_run", required=True, help="the --workdir of a configs/mil.py run")
  b.add_argument("--out", required=True, help="database folder to write")
  b.add_argument("--split", default="", help="split of candidates (default: the run's train)")
  b.add_argument("--overwrite", action="store_true",
                 help="replace an existing database folder at --out (only one this command "
                      "wrote; the old one stays until the new one is complete)")
  b.add_argument("--rules", default="", help="label rules JSON (default: the built-in "
                 "echoprime_jax/retrieval/label_rules.json)")
  b.add_argument("--index", default="auto", choices=("auto", "exact", "scann"),
                 help="search index: exact below 20,000 candidates with auto")
  from echoprime_jax.runtime.cli import at_least
  b.add_argument("--leaves", type=at_least(0), default=0, help="ScaNN tree leaves (0: ~sqrt(N))")
  b.add_argument("--search_leaves", type=at_least(0), default=0,
                 help="ScaNN leaves searched per query (0: ~5%% of the leaves)")
  b.add_argument("--reorder", type=at_least(0), default=0,
                 help="ScaNN candidates re-scored exactly (0: 250)")
  e = sub.add_parser("evaluate", help="score retrieved reports and kNN measurements")
  e.add_argument("--db", required=True, help="database folder (from build)")
  e.add_argument("--mil_run", required=True, help="the MIL run whose export holds the queries")
  e.add_argument("--split", default="", help="query split (default: the run's eval split)")
  e.add_argument("--k", type=at_least(1), default=50, help="neighbours per kNN measurement (50)")
  e.add_argument("--match", default="section", choices=("section", "report"),
                 help="each section's query searches the candidates' same-section text "
                      "embeddings (section, what the MIL stage trains for) or their whole-report "
                      "embeddings (report, EchoPrime's database)")
  e.add_argument("--consensus", type=at_least(1), default=1,
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
  from echoprime_jax.runtime import cli
  return cli.run(lambda: build(args) if args.command == "build" else evaluate(args))


if __name__ == "__main__":
  sys.exit(main())
