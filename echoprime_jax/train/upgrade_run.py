"""python -m echoprime_jax.train.upgrade_run RUN_DIR

Converts a run folder written before parameters were saved apart (layout 1: each checkpoint one
`state` item; config.json with the older field names) to the current layout, so that
`inference.load_run` reads it: every kept step is restored (the stage's optimizer gives the old
state its shape, which is why this lives with training) and saved again as params/ +
train_state/, with its evaluation metrics. Nothing is deleted: the old checkpoints stay in
checkpoints.layout1/ and the old config in config.layout1.json. The data iterator's position is
not carried over: a resumed run starts its data order afresh.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys

log = logging.getLogger("echoprime_jax.train")

LEGACY_SUFFIX = ".layout1"


def upgrade(run_dir: str) -> list[int]:
  """Converts `run_dir` in place (see the module docstring) -> the steps converted."""
  import jax
  from flax import nnx

  from echoprime_jax import parallel
  from echoprime_jax.data import tokenizer
  from echoprime_jax.inference import stage_models
  from echoprime_jax.run.checkpoints import Checkpointer
  from echoprime_jax.run.folder import RunFolder
  from echoprime_jax.train import optimizer
  from echoprime_jax.train import step as step_lib
  from echoprime_jax.train.stages import mil

  run = RunFolder(run_dir)
  for path in (run.checkpoints + LEGACY_SUFFIX, run.checkpoints + ".upgrading"):
    if os.path.exists(path):
      raise ValueError(f"{path} exists: an earlier upgrade stopped half-way; move it aside "
                       "and run this again")
  cfg = run.read_config()
  if cfg.stage == "mil":
    cfg = mil.resolve_config(cfg)
  vocab = None
  if cfg.stage == "pretrain":
    vocab = len(tokenizer.load_tokenizer(cfg.data.tokenizer or run.tokenizer))
  mcfg = stage_models.model_config(cfg.stage, cfg, vocab_size=vocab)

  def create():
    return stage_models.create_model(cfg.stage, mcfg, cfg.seed)

  abstract_params = nnx.state(nnx.eval_shape(create), nnx.Param)
  tx, _ = optimizer.make_optimizer(cfg.optim, abstract_params, 1)
  rep = parallel.replicated(parallel.make_mesh({"data": -1}))
  target = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=rep),
                        jax.eval_shape(lambda: step_lib.init_state(create, tx)))
  best = cfg.get("best_metric", "") or None
  old = Checkpointer(run.checkpoints, best_metric=best, read_only=True)
  steps = old.manager.all_steps()
  if not any(old.is_legacy(step) for step in steps):
    old.close()
    # (a run resumed by a newer version may hold both kinds: then every step is rewritten)
    raise ValueError(f"{run_dir}: no checkpoint in the older layout; nothing to convert")
  staging = run.checkpoints + ".upgrading"
  new = Checkpointer(staging, max_to_keep=len(steps), async_save=False, best_metric=best)
  try:
    for step in steps:
      _, state = old.restore(target, step=step)
      new.save(step, state, force=True, metrics=old.manager.metrics(step))
      log.info("converted step %d", step)
  finally:
    new.close()
    old.close()
  os.rename(run.checkpoints, run.checkpoints + LEGACY_SUFFIX)
  os.rename(staging, run.checkpoints)
  shutil.copyfile(run.config_file, run.path("config" + LEGACY_SUFFIX + ".json"))
  run.write_config(cfg.to_dict())
  return list(steps)


def main(argv: list[str] | None = None) -> int:
  p = argparse.ArgumentParser(prog="python -m echoprime_jax.train.upgrade_run",
                              description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("run_dir", help="a run folder (a stage's --workdir) from an older version")
  args = p.parse_args(argv)
  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
  logging.getLogger("absl").setLevel(logging.WARNING)
  from echoprime_jax.runtime import xla_flags
  xla_flags.apply()
  try:
    steps = upgrade(args.run_dir)
  except (FileNotFoundError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  print(f"converted steps {steps}; the old checkpoints are in checkpoints{LEGACY_SUFFIX}/")
  return 0


if __name__ == "__main__":
  sys.exit(main())
