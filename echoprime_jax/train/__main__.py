"""python -m echoprime_jax.train --config configs/STAGE.py:VARIANT --workdir DIR [--config.KEY=V]

Trains (or resumes) the stage the config names: configs/pretrain.py (contrastive video-report
pretraining), configs/views.py (view classifier), configs/mil.py (anatomical-attention MIL).
Multi-host: start the same command on every host; `jax.distributed` is initialised from
SLURM / Open MPI automatically, or from --coordinator / --num_processes / --process_id (or
JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID). --cpu_collectives enables gloo
collectives for CPU-only multi-process runs.
"""

from __future__ import annotations

import json
import logging
import sys

from echoprime_jax.runtime import host_malloc, xla_flags

xla_flags.apply()  # before JAX starts (jax itself is imported lazily below)

from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

config_flags.DEFINE_config_file("config", None, "stage config file, e.g. configs/pretrain.py:tiny",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "run folder (layout: echoprime_jax/run/folder.py): config, "
                    "checkpoints, metrics; a rerun with the same folder resumes")
flags.DEFINE_string("coordinator", None, "host:port of process 0 (multi-process runs)")
flags.DEFINE_integer("num_processes", None, "number of processes (multi-process runs)")
flags.DEFINE_integer("process_id", None, "this process's index (multi-process runs)")
flags.DEFINE_bool("cpu_collectives", False, "gloo collectives between CPU processes")
flags.DEFINE_bool("allow_safe_changes", False, "resume a run folder whose recorded config "
                  "differs only in fields safe to change (total_steps, epochs, log / eval / "
                  "checkpoint cadence, input threads; echoprime_jax/run/folder.py); any other "
                  "difference is refused either way")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  del argv
  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
  logging.getLogger("absl").setLevel(logging.WARNING)  # Orbax's per-save INFO chatter
  from echoprime_jax.runtime import cli
  cfg = flags.FLAGS.config
  malloc = cfg.get("host_malloc", "system")
  if malloc not in host_malloc.CHOICES:
    print(f"error: --config.host_malloc must be 'system' or 'tuned', got {malloc!r}",
          file=sys.stderr)
    return 2
  if malloc == "tuned":  # before JAX starts its threads (echoprime_jax/runtime/host_malloc.py)
    host_malloc.keep_freed_memory()
  from echoprime_jax import parallel
  parallel.initialize_distributed(flags.FLAGS.coordinator, flags.FLAGS.num_processes,
                                  flags.FLAGS.process_id, flags.FLAGS.cpu_collectives)
  from configs import moved_fields
  from echoprime_jax.train import STAGES, train
  if cfg.get("stage") not in STAGES:
    print(f"error: unknown stage {cfg.get('stage')!r}; stages: pretrain (configs/pretrain.py), "
          "views (configs/views.py), mil (configs/mil.py)", file=sys.stderr)
    return 2

  def run() -> None:
    moved_fields.check(cfg)  # a config that contradicts itself
    # user errors (a changed config, a missing data folder, ...) are one line and exit 2
    result = train(cfg, flags.FLAGS.workdir, allow_safe_changes=flags.FLAGS.allow_safe_changes)
    import jax
    if jax.process_index() == 0:
      print(json.dumps(result.metrics, indent=2))
  return cli.run(run)


if __name__ == "__main__":
  from echoprime_jax.runtime import cli as _cli
  app.run(main, flags_parser=_cli.absl_flags_parser("config"))
