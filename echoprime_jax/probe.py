"""Probe exported embeddings for a target: KNN and linear, cross-validated by patient; the
pooling ablation; zero-shot classification from text prompts.

  python -m echoprime_jax.probe --export runs/export --data shards64 --labels rules --target lvef
  python -m echoprime_jax.probe --export runs/export --labels my_labels.csv --target amyloid
  python -m echoprime_jax.probe --export runs/export --data shards64 --labels rules \
      --target pericardial_effusion --ablation --zero_shot

  python -m echoprime_jax.probe --export runs/test --train_export runs/train \
      --labels SHARDS/studies.parquet --data SHARDS --target EF

--export: a folder from `python -m echoprime_jax.export`. --embedding picks the level:
single_frame (one video's frame 0 held still), single_video (one video: its first A4C),
study_mean (mean of the videos), study_sections (the 15 MIL section embeddings, concatenated),
report (the text tower on the report: an upper reference, not an imaging result).
--ablation probes the four imaging levels side by side (the paper's comparison of pooling
levels, on your data); --zero_shot adds CLIP-style zero-shot scores of the study-mean
embeddings against per-class prompts (`zero_shot.py`; the towers named in the export's
export.json embed the prompts).
--labels: a CSV or Parquet with a study_id column (the shards' pseudonyms) and the target
column, or `rules` to extract the built-in report labels (`retrieval/label_rules.json`) from
the shards' reports (needs --data). Patients: from --data (the shards' patient pseudonyms),
else a patient_id column of the labels file, else each study is its own patient (a warning).
Writes OUT/<target>_<embedding>.json (metrics with bootstrap 95% intervals, KNN and linear vs
the training-mean / prevalence baseline), a predictions CSV and a scatter (regression) or ROC
(binary) PNG per level, and with --ablation / --zero_shot OUT/<target>_summary.json. See
`echoprime_jax/evaluation/probes.py`; the library: `evaluation/export_probes.py`.
"""

from __future__ import annotations

import argparse
import logging
import sys


def main(argv: list[str] | None = None) -> int:
  from echoprime_jax.evaluation.export_probes import EMBEDDINGS, ProbeRequest, probe_export
  p = argparse.ArgumentParser(prog="python -m echoprime_jax.probe", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--export", required=True, help="folder from python -m echoprime_jax.export")
  p.add_argument("--labels", required=True,
                 help="CSV / Parquet with study_id + target, or 'rules' (report labels)")
  p.add_argument("--target", required=True, help="the label column / rule name to probe")
  p.add_argument("--data", default="", help="the shards folder (patients; reports for rules)")
  p.add_argument("--embedding", default="study_mean", choices=tuple(EMBEDDINGS),
                 help="which embedding level to probe (default study_mean)")
  p.add_argument("--ablation", action="store_true",
                 help="probe every pooling level the export has (single_frame, single_video, "
                      "study_mean, study_sections) and print them side by side")
  p.add_argument("--zero_shot", action="store_true",
                 help="also classify zero-shot: study-mean embeddings against the text "
                      "tower's embeddings of per-class prompts (--prompts)")
  from echoprime_jax.evaluation.zero_shot import DEFAULT_PROMPTS
  p.add_argument("--prompts", default=DEFAULT_PROMPTS,
                 help="zero-shot prompt file (JSON; default: the built-in prompts, "
                      "echoprime_jax/evaluation/zero_shot_prompts.json)")
  p.add_argument("--kind", default="auto", choices=("auto", "regression", "binary"),
                 help="auto: binary when the target is 0/1, else regression")
  from echoprime_jax.runtime.cli import at_least
  p.add_argument("--folds", type=at_least(2), default=5,
                 help="cross-validation folds by patient (5)")
  p.add_argument("--k", type=at_least(1), default=10, help="neighbours of the KNN probe (10)")
  p.add_argument("--bootstraps", type=at_least(10), default=1000,
                 help="bootstrap resamples (1000)")
  p.add_argument("--out", default="", help="output folder (default: EXPORT/probes)")
  p.add_argument("--train_export", default="",
                 help="fit the probes on this export (a training split) and score them on "
                      "--export (a held-out split), instead of cross-validating --export: a "
                      "dataset's own split, e.g. EchoNet-Dynamic's TRAIN -> TEST")
  args = p.parse_args(argv)
  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
  logging.getLogger("absl").setLevel(logging.WARNING)
  from echoprime_jax.runtime import cli
  return cli.run(lambda: probe_export(ProbeRequest(**vars(args))) and None)


if __name__ == "__main__":
  sys.exit(main())
