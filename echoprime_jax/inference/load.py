"""Load a finished run folder for inference: its config, its model in evaluation mode and its
tokenizer, from the parameters alone.

  run = load_run("runs/pretrain")         # any stage's --workdir
  run.model(video, ids, mask)             # two_tower.TwoTower, eval mode, replicated on the mesh

The parameters come from the run's best kept checkpoint by its config's best_metric, else its
newest; only the checkpoint's `params` item is read and no optimizer is built. The RNG state a
model carries for dropout is made fresh (an evaluation-mode model never draws from it). The
folder is opened read-only. Nothing here imports training code.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import Any

import ml_collections

from echoprime_jax.run.folder import RunFolder

log = logging.getLogger("echoprime_jax.inference")


@dataclasses.dataclass
class LoadedRun:
  stage: str  # "pretrain", "views" or "mil"; "tower" for a converted tower folder
  config: ml_collections.ConfigDict
  model: Any  # the stage's nnx model, evaluation mode
  tokenizer: Any | None  # pretrain: the run's tokenizer; other stages: None
  step: int
  folder: RunFolder

  @property
  def source(self) -> dict[str, Any]:
    """Where the weights came from (part of an embedding cache's fingerprint)."""
    return {"run": os.path.abspath(self.folder.root), "step": int(self.step)}


def restore_model(create, folder: RunFolder, best_metric: str, mesh) -> tuple[Any, int]:
  """`create()` -> an nnx model (only traced) with the parameters of the folder's best kept
  step by `best_metric` (else its newest), replicated on `mesh`; -> (model, step)."""
  import jax
  from flax import nnx

  from echoprime_jax import parallel
  from echoprime_jax.run.checkpoints import Checkpointer
  graphdef, abstract_params, _ = nnx.split(nnx.eval_shape(create), nnx.Param, ...)
  rep = parallel.replicated(mesh)
  target = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=rep),
                        abstract_params)
  ckpt = Checkpointer(folder.checkpoints, best_metric=best_metric or None, read_only=True)
  try:
    step = ckpt.best_step() or ckpt.latest_step()
    if step is None:
      raise FileNotFoundError(f"{folder.checkpoints}: no checkpoint to restore")
    step, params = ckpt.restore_params(target, step)
  finally:
    ckpt.close()
  # the non-parameter state (RNG keys and counters) of a fresh model; XLA drops the parameter
  # initialisation, whose results are unused
  rest = jax.jit(lambda: nnx.split(create(), nnx.Param, ...)[2], out_shardings=rep)()
  model = nnx.merge(graphdef, params, rest)
  model.eval()
  return model, int(step)


def load_run(run_dir: str, mesh=None, *, stage: str | None = None,
             dtype: str | None = None) -> LoadedRun:
  """Any stage's run folder, or a converted tower folder (`convert_weights` output, e.g.
  EchoPrime's released video encoder: stage "tower", config its tower.json, step 0) ->
  LoadedRun (see the module docstring). stage: the kind expected (an error names the folder
  otherwise); dtype: the compute dtype (default the run's)."""
  from echoprime_jax import parallel
  from echoprime_jax.data import tokenizer as tokenizer_lib
  from echoprime_jax.inference import stage_models
  if os.path.isfile(os.path.join(run_dir, "tower.json")):
    return _load_tower(run_dir, mesh, stage, dtype)
  folder = RunFolder(run_dir)
  cfg = folder.read_config(stage)
  kind = cfg.stage
  if not folder.has_checkpoints():
    raise FileNotFoundError(f"{folder.checkpoints}: no checkpoint to restore (has the run "
                            "saved a step?)")
  mesh = mesh if mesh is not None else parallel.make_mesh({"data": -1})
  tok = None
  vocab = None
  if kind == "pretrain":
    tok = tokenizer_lib.load_tokenizer(cfg.data.tokenizer or folder.tokenizer)
    vocab = len(tok)
  mcfg = stage_models.model_config(kind, cfg, vocab_size=vocab, dtype=dtype)
  model, step = restore_model(lambda: stage_models.create_model(kind, mcfg, 0), folder,
                              cfg.get("best_metric", ""), mesh)
  log.info("%s model from %s, step %d", kind, run_dir, step)
  return LoadedRun(kind, cfg, model, tok, step, folder)


def _load_tower(path: str, mesh, stage: str | None, dtype: str | None) -> LoadedRun:
  """A converted tower folder as a LoadedRun, its parameters replicated on the mesh."""
  import jax
  from flax import nnx

  from echoprime_jax import parallel
  from echoprime_jax.weights import tower_folder
  if stage not in (None, "tower"):
    raise ValueError(f"{path}: a converted tower (tower.json), expected a {stage!r} run folder")
  meta = tower_folder.read_tower_meta(path)
  model = tower_folder.load_tower(path, **({"dtype": dtype} if dtype else {}))
  mesh = mesh if mesh is not None else parallel.make_mesh({"data": -1})
  nnx.update(model, jax.device_put(nnx.state(model), parallel.replicated(mesh)))
  model.eval()
  log.info("%s tower from %s", meta["kind"], path)
  return LoadedRun("tower", ml_collections.ConfigDict(meta), model, None, 0, RunFolder(path))
