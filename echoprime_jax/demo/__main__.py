"""python -m echoprime_jax.demo: see the package docstring (`--help` prints it)."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys

from echoprime_jax.demo.stages import QUICK, STAGES, Demo, Settings


def main(argv: list[str] | None = None) -> int:
  import echoprime_jax.demo as package
  p = argparse.ArgumentParser(prog="python -m echoprime_jax.demo", description=package.__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--workdir", required=True, help="folder for every stage's outputs")
  p.add_argument("--fresh", action="store_true",
                 help="delete the stages already in WORKDIR and run everything again")
  p.add_argument("--quick", action="store_true",
                 help="half the pretraining steps (500): ~4 minutes, weaker figures; what the "
                      "test suite runs")
  from echoprime_jax.runtime.cli import at_least
  p.add_argument("--studies", type=at_least(0), default=0,
                 help="synthetic studies (default 160, half of them held out; fewer widen "
                      "every interval)")
  p.add_argument("--seed", type=int, default=0,
                 help="seed of the synthetic archive, the split's data order and every model's "
                      "initialisation (default 0)")
  names = [s.name for s in STAGES]
  p.add_argument("--until", default=names[-1], choices=names,
                 help="stop after this stage (default: all, then the summary)")
  args = p.parse_args(argv)
  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
  logging.getLogger("absl").setLevel(logging.WARNING)
  from echoprime_jax.runtime import cli, xla_flags
  xla_flags.apply()
  settings = QUICK if args.quick else Settings()
  if args.studies:
    settings = dataclasses.replace(settings, studies=args.studies)
  settings = dataclasses.replace(settings, seed=args.seed)
  demo = Demo(args.workdir, settings)

  def run() -> None:
    if args.fresh:
      demo.clear()
    summary = demo.run(args.until)
    if summary is None:
      print(f"stopped after stage {args.until!r}; outputs in {os.path.abspath(args.workdir)}")
      return
    failed = [r["figure"] for r in summary["rows"] if r["judged"] and not r["beats_baseline"]]
    if failed:
      print(f"\n{len(failed)} figure(s) did not beat their baseline: {failed}")
    print(f"\noutputs in {os.path.abspath(args.workdir)} (summary.md, plots/, "
          "interpret/report.html)")
  return cli.run(run)


if __name__ == "__main__":
  sys.exit(main())
