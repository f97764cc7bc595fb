"""Each stage's jitted programs, built the way the trainer builds them (`trainer.step_program`:
the same model, optimizer, mesh axes, state shardings, donation and compute dtype), with
abstract inputs: nothing is allocated, no data is read.

  pretrain  train_step (the optimizer step on a global batch), eval_embed (the evaluation's
            embedding step on an eval batch)
  views     train_step, eval_predict (the view predictor's logits on an eval batch)
  mil       train_step (on a batch of studies' cached video embeddings), index_search (the
            exact candidate search, `retrieval.search_index`, over EchoPrime's 1,230,676
            candidates for 1,024 queries, k = 50, on one device)
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import jax

from echoprime_jax import parallel
import numpy as np

from data_prep import views as views_lib
from echoprime_jax.aot import abstract_batch
from echoprime_jax.inference import attention_table, stage_models, view_predictor
from echoprime_jax.retrieval import search_index
from echoprime_jax.train import trainer
from echoprime_jax.train.stage import Stage
from echoprime_jax.train.stages import mil, pretrain, views

ECHOPRIME_CANDIDATES = 1_230_676  # the released database's size


@dataclasses.dataclass
class Program:
  name: str
  jitted: Any  # a jax.jit-wrapped function
  args: tuple  # its abstract arguments (ShapeDtypeStructs with shardings)
  state_bytes_per_device: int = 0  # the donated train state's share of one device (0: none)
  examples: int = 0  # global batch
  on_mesh: bool = True  # traced under the stage's mesh (False: a one-device program)
  precision: str = "bf16"  # its matmuls' peak: "bf16", "tf32" (float32), "fp32" (HIGHEST)


def bytes_per_device(tree) -> int:
  """Bytes of one device's shard of every array in an abstract, sharded tree."""
  total = 0
  for leaf in jax.tree.leaves(tree):
    shape = leaf.sharding.shard_shape(leaf.shape)
    total += int(leaf.dtype.itemsize * math.prod(shape))  # (a PRNG key's dtype has one too)
  return total


def _step_program(cfg: Any, mesh, name: str, mcfg, parts: dict) -> trainer.StepProgram:
  """A stage's step as `trainer.train` builds it, from its model config and step parts."""
  stage = Stage(name=name, train_data=None, num_examples=0,
                create_model=lambda seed: stage_models.create_model(name, mcfg, seed), **parts)
  shards = math.prod(mesh.shape[a] for a in parallel.batch_axes(mesh))
  for field in ("batch_size", "eval_batch_size"):
    if cfg[field] % shards:
      raise ValueError(f"--config.{field}={cfg[field]} does not split over the {shards} batch "
                       f"shards of the mesh {dict(mesh.shape)}; give a multiple of {shards}")
  # the schedule's length changes a learning rate, not the program: any run past the warm-up
  steps = max(int(cfg.total_steps), int(cfg.optim.warmup_steps) + 1, 2)
  return trainer.step_program(cfg, stage, mesh, total_steps=steps)


def precision(cfg: Any) -> str:
  """The matmul peak a config's compute dtype runs at: 16-bit -> bf16, float32 -> tf32 (XLA's
  default precision for float32 matmuls on NVIDIA GPUs)."""
  return "bf16" if np.dtype(cfg.get("dtype", "float32")).itemsize == 2 else "tf32"


def _train_program(cfg: Any, step: trainer.StepProgram, batch: dict) -> Program:
  state = step.sharded_state()
  return Program("train_step", step.step, (state, batch), bytes_per_device(state),
                 cfg.batch_size, precision=precision(cfg))


def pretrain_step(cfg: Any, mesh) -> tuple[trainer.StepProgram, dict, dict]:
  """The pretraining step as the trainer builds it, with its abstract train and eval batches."""
  mcfg = stage_models.model_config("pretrain", cfg, vocab_size=cfg.towers.text.vocab_size)
  program = _step_program(cfg, mesh, "pretrain", mcfg, pretrain.step_parts(cfg, mesh))
  sharding = parallel.batch_sharding(mesh)
  window = cfg.towers.text.max_length
  train_batch = abstract_batch.clip_batch(pretrain.pipeline_config(cfg, cfg.batch_size, True),
                                          window, cfg.batch_size, True, sharding)
  eval_batch = abstract_batch.clip_batch(
      pretrain.pipeline_config(cfg, cfg.eval_batch_size, False), window, cfg.eval_batch_size,
      False, sharding)
  return program, train_batch, eval_batch


def pretrain_programs(cfg: Any, mesh) -> list[Program]:
  program, train_batch, eval_batch = pretrain_step(cfg, mesh)
  state = program.sharded_state()
  embed = pretrain.jit_embed_step(cfg, program.eval_graphdef)
  return [
      _train_program(cfg, program, train_batch),
      Program("eval_embed", embed, (state["params"], state["rest"], eval_batch), 0,
              cfg.eval_batch_size, precision=precision(cfg)),
  ]


def views_programs(cfg: Any, mesh) -> list[Program]:
  taxonomy = views_lib.taxonomy(cfg.taxonomy)
  # the class weights come from the training labels; their values do not change the program
  weights = np.ones(len(taxonomy), np.float32)
  coarse = None if taxonomy.is_coarse else taxonomy.coarse_ids()
  step = _step_program(cfg, mesh, "views", stage_models.model_config("views", cfg),
                       views.step_parts(cfg, weights, coarse))
  sharding = parallel.batch_sharding(mesh)
  train_batch = abstract_batch.clip_batch(views.pipeline_config(cfg, cfg.batch_size, True),
                                          None, cfg.batch_size, True, sharding)
  eval_batch = abstract_batch.clip_batch(views.pipeline_config(cfg, cfg.eval_batch_size, False),
                                         None, cfg.eval_batch_size, False, sharding)
  state = step.sharded_state()
  predict = jax.jit(functools.partial(view_predictor.predict_step, graphdef=step.eval_graphdef,
                                      dtype=cfg.dtype))
  return [_train_program(cfg, step, train_batch),
          Program("eval_predict", predict, (state["params"], state["rest"], eval_batch), 0,
                  cfg.eval_batch_size, precision=precision(cfg))]


def mil_programs(cfg: Any, mesh) -> list[Program]:
  step = _step_program(cfg, mesh, "mil", stage_models.model_config("mil", cfg),
                       mil.step_parts(cfg))
  batch = abstract_batch.study_batch(cfg.towers.embed_dim, cfg.data.max_videos,
                                     len(views_lib.COARSE_VIEWS),
                                     len(attention_table.TABLE_SECTIONS), cfg.batch_size,
                                     parallel.batch_sharding(mesh))
  device = mesh.devices.flat[0]
  one = jax.sharding.SingleDeviceSharding(device)
  chunk, queries, k = 65536, 1024, 50  # ExactIndex's defaults; EchoPrime reads k = 50
  chunks = -(-ECHOPRIME_CANDIDATES // chunk)
  search = Program("index_search", search_index.exact_topk, (
      jax.ShapeDtypeStruct((queries, cfg.towers.embed_dim), np.float32, sharding=one),
      jax.ShapeDtypeStruct((chunks, chunk, cfg.towers.embed_dim), np.float32, sharding=one),
      k, ECHOPRIME_CANDIDATES), 0, queries, on_mesh=False, precision="fp32")  # HIGHEST
  return [_train_program(cfg, step, batch), search]


BUILDERS = {"pretrain": pretrain_programs, "views": views_programs, "mil": mil_programs}


def builder(cfg: Any):
  """The program builder of the config's stage (a ValueError for a config of no stage)."""
  stage = cfg.get("stage", "")
  if stage not in BUILDERS:
    raise ValueError(f"compiling ahead of time covers the stages {', '.join(BUILDERS)}; "
                     f"this config's stage is {stage!r}")
  return BUILDERS[stage]


def stage_programs(cfg: Any, mesh) -> list[Program]:
  return builder(cfg)(cfg, mesh)
