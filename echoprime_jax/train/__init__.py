"""Training: `train(cfg, workdir)` runs (or resumes) the stage a config names. The one entry
into this package from outside it (the `python -m echoprime_jax.train` command and the demo);
inference never imports it.

  trainer.py     the trainer every stage runs through (mesh -> ... -> loop)
  stage.py       what a stage gives it; step.py the optimizer step they share
  stages/        pretrain (video-report CLIP), views (view classifier), mil (section aggregator)
  optimizer.py   AdamW + schedule; metrics_writer.py metrics.jsonl and TensorBoard
"""

from __future__ import annotations

from typing import Any

from echoprime_jax.run.folder import STAGES  # noqa: F401  (the entry point checks cfg.stage)


def train(cfg: Any, workdir: str, *, allow_safe_changes: bool = False):
  """Runs (or resumes) cfg.stage ("pretrain", "views" or "mil") in `workdir` -> the trainer's
  TrainResult (last evaluation, final state, step, best step). A folder with checkpoints
  resumes only under the config it recorded; allow_safe_changes lets `run.folder.SAFE_TO_CHANGE`
  fields (total_steps, ...) differ."""
  from configs import moved_fields
  from echoprime_jax.train import trainer
  from echoprime_jax.train.stages import mil, pretrain, views
  moved_fields.check(cfg)
  if cfg.stage == "pretrain":
    return trainer.train(pretrain.setup, cfg, workdir, allow_safe_changes=allow_safe_changes)
  if cfg.stage == "views":
    return trainer.train(views.setup, cfg, workdir, allow_safe_changes=allow_safe_changes)
  if cfg.stage == "mil":
    return mil.train(mil.resolve_config(cfg), workdir, allow_safe_changes=allow_safe_changes)
  raise ValueError(f"unknown stage {cfg.stage!r}; stages: pretrain (configs/pretrain.py), "
                   "views (configs/views.py), mil (configs/mil.py)")
