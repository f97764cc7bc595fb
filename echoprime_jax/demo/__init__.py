"""The whole system end to end on a synthetic archive, in one command.

  python -m echoprime_jax.demo --workdir runs/demo            # ~6 minutes on 2 CPU cores
  python -m echoprime_jax.demo --workdir runs/demo --quick    # half the steps (the CI test)

The stages (`stages.STAGES`, a list of data: name, what it makes, the library call that makes
it) each write a folder of WORKDIR; each is also a command of its own (the README shows them on
a real archive):
  archive    synthetic studies: multi-frame echo DICOMs (JPEG, RLE, RGB, grey; 11 views, stills
             mixed in), a free-text report each, and their ground truth   (data_prep.synthetic)
  shards     de-identified ArrayRecord shards at 64 px, split by patient   (data_prep.convert)
  pretrain   the tiny video-report CLIP                                    (configs/pretrain.py)
  views      the tiny 11-view classifier                                   (configs/views.py)
  mil        the anatomical-attention aggregator on the frozen towers      (configs/mil.py)
  mil_uniform  the same with attention fixed uniform (its projection trained): the ablation
  export     per-video / per-study / per-section embeddings, predicted views (export)
  database   the candidate database (train split) + retrieval evaluation (index build/evaluate)
  interpret  one held-out study: report, measurements, HTML page          (interpret)
  probes     LVEF (regression) and left-atrial dilation (binary) probes    (probe)
then prints the summary table and writes WORKDIR/summary.json, WORKDIR/summary.md and
WORKDIR/plots/ (loss and recall curves, the views' confusion matrix; `summary.py`). Each figure
is measured on the held-out studies with a 95% bootstrap interval over them
(`evaluation.bootstrap`), and "beats" its baseline only when the whole interval is on the
better side. Nothing is selected on the held-out studies: every stage uses its last step.

A stage whose outputs are complete (WORKDIR/.stages/<stage>.json, written last) is not run
again: a rerun after an interruption continues where it stopped; --fresh deletes WORKDIR's
stages first. The archive is synthetic, so the shards use the built-in insecure test key: never
use that key for real data (see data_prep.convert --key-file).
"""

from echoprime_jax.demo.stages import QUICK, STAGES, Demo, Settings  # noqa: F401
from echoprime_jax.demo.summary import Figure  # noqa: F401
