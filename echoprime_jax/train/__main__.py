"""python -m echoprime_jax.train --config configs/STAGE.py:VARIANT --workdir DIR [--config.KEY=V]

Trains (or resumes) the stage the config names: configs/pretrain.py (contrastive video-report
pretraining), configs/views.py (view classifier), configs/mil.py (anatomical-attention MIL).
Multi-host: start the same command on every host; `jax.distributed` is initialised from
SLURM / Open MPI automatically, or from --coordinator / --num_processes / --process_id (or
JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID). --cpu_collectives enables gloo collectives for CPU-only multi-process runs.
"""

from __future__ import annotations

import json
import logging

from echoprime_jax import host_malloc, xla_flags

xla_flags.apply()  # before JAX starts (jax itself is imported lazily below)

from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

config_flags.DEFINE_config_file("config", None, "stage config file, e.g. configs/pretrain.py:tiny",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "run folder: checkpoints, metrics.jsonl, tensorboard/, "
                    "tokenizer/ (a rerun with the same folder resumes)")
flags.DEFINE_string("coordinator", None, "host:port of process 0 (multi-process runs)")
flags.DEFINE_integer("num_processes", None, "number of processes (multi-process runs)")
flags.DEFINE_integer("process_id", None, "this process's index (multi-process runs)")
flags.DEFINE_bool("cpu_collectives", False, "gloo collectives between CPU processes")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  del argv
  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
  logging.getLogger("absl").setLevel(logging.WARNING)  # Orbax's per-save INFO chatter
  cfg = flags.FLAGS.config
  malloc = cfg.get("host_malloc", "system")
  if malloc not in host_malloc.CHOICES:
    raise app.UsageError(f"--config.host_malloc must be 'system' or 'tuned', got {malloc!r}")
  if malloc == "tuned":  # before JAX starts its threads (echoprime_jax/host_malloc.py)
    host_malloc.keep_freed_memory()
  from echoprime_jax import parallel
  parallel.initialize_distributed(flags.FLAGS.coordinator, flags.FLAGS.num_processes,
                                  flags.FLAGS.process_id, flags.FLAGS.cpu_collectives)
  if cfg.stage == "pretrain":
    from echoprime_jax.train import loop as stage
  elif cfg.stage == "views":
    from echoprime_jax.train import view_classifier as stage
  elif cfg.stage == "mil":
    from echoprime_jax.train import mil_stage as stage
  else:
    raise app.UsageError(f"unknown stage {cfg.stage!r}; stages: pretrain (configs/pretrain.py), "
                         "views (configs/views.py), mil (configs/mil.py)")
  result = stage.train(cfg, flags.FLAGS.workdir)
  import jax
  if jax.process_index() == 0:
    print(json.dumps(result.metrics, indent=2))


if __name__ == "__main__":
  app.run(main)
