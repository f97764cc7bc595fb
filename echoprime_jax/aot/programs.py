"""Each stage's jitted programs, built the way the trainer builds them (`trainer.step_program`:
the same model, optimizer, mesh axes, state shardings, donation and compute dtype), with
abstract inputs: nothing is allocated, no data is read.

  pretrain  train_step (the optimizer step on a global batch), eval_embed (the evaluation's
            embedding step on an eval batch)
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax

from echoprime_jax import parallel
from echoprime_jax.aot import abstract_batch
from echoprime_jax.inference import stage_models
from echoprime_jax.train import trainer
from echoprime_jax.train.stage import Stage
from echoprime_jax.train.stages import pretrain


@dataclasses.dataclass
class Program:
  name: str
  jitted: Any  # a jax.jit-wrapped function
  args: tuple  # its abstract arguments (ShapeDtypeStructs with shardings)
  state_bytes_per_device: int = 0  # the donated train state's share of one device (0: none)
  examples: int = 0  # global batch


def _abstract(tree, shardings):
  return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                      tree, shardings)


def bytes_per_device(tree) -> int:
  """Bytes of one device's shard of every array in an abstract, sharded tree."""
  total = 0
  for leaf in jax.tree.leaves(tree):
    shape = leaf.sharding.shard_shape(leaf.shape)
    total += int(leaf.dtype.itemsize * math.prod(shape))  # (a PRNG key's dtype has one too)
  return total


def pretrain_step(cfg: Any, mesh) -> tuple[trainer.StepProgram, dict, dict]:
  """The pretraining step as the trainer builds it, with its abstract train and eval batches."""
  mcfg = stage_models.model_config("pretrain", cfg, vocab_size=cfg.towers.text.vocab_size)
  stage = Stage(name="pretrain", train_data=None, num_examples=0,
                create_model=lambda seed: stage_models.create_model("pretrain", mcfg, seed),
                **pretrain.step_parts(cfg, mesh))
  # the schedule's length changes a learning rate, not the program: any run past the warm-up
  steps = max(int(cfg.total_steps), int(cfg.optim.warmup_steps) + 1, 2)
  program = trainer.step_program(cfg, stage, mesh, total_steps=steps)
  sharding = parallel.batch_sharding(mesh)
  shards = math.prod(mesh.shape[a] for a in parallel.batch_axes(mesh))
  for name in ("batch_size", "eval_batch_size"):
    if cfg[name] % shards:
      raise ValueError(f"--config.{name}={cfg[name]} does not split over the {shards} batch "
                       f"shards of the mesh {dict(mesh.shape)}; give a multiple of {shards}")
  window = cfg.towers.text.max_length
  train_batch = abstract_batch.clip_batch(pretrain.pipeline_config(cfg, cfg.batch_size, True),
                                          window, cfg.batch_size, True, sharding)
  eval_batch = abstract_batch.clip_batch(
      pretrain.pipeline_config(cfg, cfg.eval_batch_size, False), window, cfg.eval_batch_size,
      False, sharding)
  return program, train_batch, eval_batch


def pretrain_programs(cfg: Any, mesh) -> list[Program]:
  program, train_batch, eval_batch = pretrain_step(cfg, mesh)
  state = _abstract(program.abstract_state, program.shardings)
  embed = pretrain.jit_embed_step(cfg, program.eval_graphdef)
  return [
      Program("train_step", program.step, (state, train_batch), bytes_per_device(state),
              cfg.batch_size),
      Program("eval_embed", embed, (state["params"], state["rest"], eval_batch), 0,
              cfg.eval_batch_size),
  ]


BUILDERS = {"pretrain": pretrain_programs}


def stage_programs(cfg: Any, mesh) -> list[Program]:
  stage = cfg.get("stage", "")
  if stage not in BUILDERS:
    raise ValueError(f"compiling ahead of time covers the stages {', '.join(BUILDERS)}; "
                     f"this config's stage is {stage!r}")
  return BUILDERS[stage](cfg, mesh)
