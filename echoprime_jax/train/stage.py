"""What a stage gives the trainer: its data, its model, its loss and its evaluation.

A stage module (`train/stages/*.py`) has one function, `setup(cfg, run, mesh) -> Stage`: it
reads its data (and whatever it precomputes from it: MIL's frozen-tower embeddings) and returns
the pieces below. The trainer (`trainer.train`) owns everything else, the same for every stage:
mesh, optimizer, shardings, the jitted step (`step.train_step`), checkpoints, the loop.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax


@dataclasses.dataclass
class Stage:
  name: str  # "pretrain", "views", "mil": the progress bar's label
  train_data: Any  # a Grain dataset of per-process batches, endless
  num_examples: int  # training examples per epoch (cfg.epochs -> steps)
  create_model: Callable[[int], Any]  # seed -> a freshly initialised nnx model
  # the step's three parts (`step.train_step`): batch -> model inputs (outside the gradient),
  # (model, inputs) -> (loss, metrics), params after the update -> (params, metrics)
  prepare: Callable[[dict], dict]
  loss: Callable[[Any, dict], tuple[jax.Array, dict]]
  constrain: Callable[[Any], tuple[Any, dict]] | None = None
  # eval-mode graphdef -> evaluator(state) -> metrics; None: the stage does not evaluate
  make_evaluator: Callable[[Any], Callable[[dict], dict[str, float]]] | None = None
  # params of a fresh run -> the params to start from (converted weights); None: as created
  init_params: Callable[[Any], Any] | None = None
  # after the loop: (result, params of the checkpoint to export with, rest) -> None
  finish: Callable[[Any, Any, Any], None] | None = None


def per_process(global_batch: int) -> int:
  """A global batch's share of this process."""
  if global_batch % jax.process_count():
    raise ValueError(f"batch_size {global_batch} is not divisible by {jax.process_count()} "
                     "processes")
  return global_batch // jax.process_count()
