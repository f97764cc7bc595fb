"""The pretraining loop, top to bottom: mesh -> data -> model -> shard -> step -> checkpoint ->
eval -> loop. Runs unchanged on one CPU, one host with several GPUs, or many hosts (every
process runs this same function; each reads its own slice of the data).

Resume: the newest checkpoint in WORKDIR/checkpoints (params, optimizer state, step, RNG state,
the Grain iterator) is restored onto this run's shardings, so a killed run continues with the
batch it would have seen and ends bit-identical on CPU. SIGTERM (preemption) saves and exits.

`restore_or_init` and `run` (step -> log -> evaluate -> checkpoint) are shared by every stage;
the view classifier (`view_classifier.train`) reads the same way with its own model and step.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import os
import signal
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from echoprime_jax import parallel
from echoprime_jax.data import augment as augment_lib
from echoprime_jax.data import pipeline, tokenizer
from echoprime_jax.data.shards import ShardIndex
from echoprime_jax.train import optimizer, pretrain
from echoprime_jax.train.checkpoint import Checkpointer
from echoprime_jax.train.metrics_writer import MetricsWriter

log = logging.getLogger("echoprime_jax.train")


def _pipeline_config(cfg: Any, batch_size: int, train: bool) -> pipeline.PipelineConfig:
  d = cfg.data
  return pipeline.PipelineConfig(
      batch_size=batch_size, clip_length=d.clip_length, clip_stride=d.clip_stride,
      frame_size=cfg.towers.video.image_size,
      augment=augment_lib.AugmentConfig() if (train and d.augment) else None,
      seed=cfg.seed, num_epochs=None if train else 1, read_threads=d.read_threads,
      read_buffer=d.read_buffer, workers=d.workers if train else 0)


def per_process(global_batch: int) -> int:
  if global_batch % jax.process_count():
    raise ValueError(f"batch_size {global_batch} is not divisible by {jax.process_count()} "
                     "processes")
  return global_batch // jax.process_count()


def load_converted(params, path: str, what: str):
  """`params` (an nnx.Param state) overwritten by a converted tower folder (convert_weights
  output) of the same structure; dtypes kept."""
  from echoprime_jax.weights import checkpoint as tower_ckpt
  loaded = nnx.state(tower_ckpt.load_tower(path), nnx.Param)
  log.info("initialised the %s from %s", what, path)
  return jax.tree.map(lambda new, old: jnp.asarray(new, old.dtype), loaded, params)


def load_towers(cfg: Any, params) -> Any:
  """Overwrite tower parameters with converted checkpoints (cfg.init.video / cfg.init.text)."""
  for name in ("video", "text"):
    path = cfg.init.get(name, "")
    if path:
      params[name] = load_converted(params[name], path, f"{name} tower")
  return params


@dataclasses.dataclass
class TrainResult:
  metrics: dict[str, float]  # the last evaluation (empty if none ran)
  state: dict  # final train state (sharded jax.Arrays)
  step: int
  best_step: int | None = None  # the kept checkpoint with the best cfg.best_metric


def train(cfg: Any, workdir: str) -> TrainResult:
  """Runs (or resumes) training to cfg.total_steps (or the epochs); see the module docstring."""
  os.makedirs(workdir, exist_ok=True)
  is_main = jax.process_index() == 0

  # -- mesh
  mesh = parallel.make_mesh(dict(cfg.mesh))
  batch_sharding = parallel.batch_sharding(mesh)
  log.info("mesh %s over %d devices, %d processes", dict(mesh.shape), jax.device_count(),
           jax.process_count())

  # -- data
  index = ShardIndex(cfg.data.dir)
  train_studies = index.studies(cfg.data.train_split)
  texts = [" ".join(f"{k}: {v}" for k, v in s.sections.items()) for s in train_studies]
  tok = tokenizer.tokenizer_for_run(workdir, cfg.data.tokenizer or None, texts,
                                    cfg.data.vocab_size) if is_main else None
  if jax.process_count() > 1:  # the main process trains the vocab once; others load it
    from jax.experimental import multihost_utils
    multihost_utils.sync_global_devices("tokenizer")
    tok = tok or tokenizer.tokenizer_for_run(workdir, cfg.data.tokenizer or None, [])
  encoder = tokenizer.ReportEncoder(tok, max_len=cfg.data.max_text_len)
  local_batch = per_process(cfg.batch_size)
  train_ds = pipeline.clip_dataset(index, cfg.data.train_split, encoder,
                                   _pipeline_config(cfg, local_batch, True), train=True)
  n_train = sum(len(s.records) for s in train_studies if s.has_report)
  total_steps = int(cfg.total_steps) or max(1, int(math.ceil(cfg.epochs * n_train /
                                                             cfg.batch_size)))

  # -- model and optimizer (abstract: nothing allocated yet)
  mcfg = pretrain.model_config(cfg, vocab_size=len(tok))
  abstract_model = nnx.eval_shape(lambda: pretrain.create_model(mcfg, cfg.seed))
  graphdef, abstract_params, _ = pretrain.split_model(abstract_model)
  abstract_model.eval()
  eval_graphdef, _, _ = pretrain.split_model(abstract_model)
  tx, schedule = optimizer.make_optimizer(cfg.optim, abstract_params, total_steps)

  # -- shardings; parameters are created already sharded (or restored onto them)
  it = iter(train_ds)
  ckpt, start, state, state_shardings = restore_or_init(
      cfg, workdir, lambda: pretrain.init_state(mcfg, tx, cfg.seed), mesh, it)
  if start == 0 and (cfg.init.video or cfg.init.text):
    state["params"] = jax.device_put(load_towers(cfg, state["params"]),
                                     state_shardings["params"])

  # -- step
  step_fn = pretrain.jit_train_step(graphdef, tx, schedule, cfg, mesh, state_shardings,
                                    batch_sharding)
  first = pipeline.to_global(next(it), batch_sharding)
  compiled = step_fn.lower(state, first).compile()
  evaluator = Evaluator(cfg, index, encoder, eval_graphdef, mesh) if cfg.eval_every else None
  return run(cfg, workdir, compiled=compiled, state=state, first=first, it=it, start=start,
             total_steps=total_steps, batch_sharding=batch_sharding, evaluator=evaluator,
             ckpt=ckpt, desc="pretrain")


def restore_or_init(cfg: Any, workdir: str, make_state, mesh, it):
  """-> (checkpointer, start step, state, state shardings). The newest checkpoint in
  WORKDIR/checkpoints is restored onto this mesh's shardings (with the data iterator `it`);
  without one, `make_state()` runs jitted straight into those shardings and start is 0."""
  abstract_state = jax.eval_shape(make_state)
  shardings = parallel.tree_shardings(abstract_state, mesh, cfg.min_fsdp_size)
  ckpt = Checkpointer(os.path.join(workdir, "checkpoints"), cfg.keep_checkpoints,
                      best_metric=(cfg.best_metric or None) if cfg.eval_every else None)
  if ckpt.latest_step() is not None:
    target = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                          abstract_state, shardings)
    start, state = ckpt.restore(target, it)
    log.info("resumed from step %d", start)
    return ckpt, start, state, shardings
  return ckpt, 0, jax.jit(make_state, out_shardings=shardings)(), shardings


def run(cfg: Any, workdir: str, *, compiled, state: dict, first: dict, it, start: int,
        total_steps: int, batch_sharding, evaluator, ckpt: Checkpointer,
        desc: str) -> TrainResult:
  """The loop every stage shares: step -> log -> evaluate -> checkpoint, until total_steps or
  SIGTERM (which saves and exits). `compiled(state, batch) -> (state, metrics)`; `first` is
  the (global) batch it was compiled for; `evaluator(state) -> metrics` or None. cfg fields:
  log_every, eval_every, checkpoint_every, batch_size, peak_tflops, best_metric."""
  is_main = jax.process_index() == 0
  flops = pretrain.flops_per_step(compiled)
  writer = MetricsWriter(workdir, enabled=is_main)
  writer.write_config(cfg.to_dict() if hasattr(cfg, "to_dict") else dict(cfg))

  stop = {"now": False}
  previous = signal.getsignal(signal.SIGTERM)
  signal.signal(signal.SIGTERM, lambda *_: stop.update(now=True))  # preemption: save, exit

  from tqdm import tqdm
  bar = tqdm(total=total_steps, initial=start, desc=desc, unit="step", disable=not is_main)
  last_eval: dict[str, float] = {}
  best = None
  done = start
  batch, t0, window = first, time.perf_counter(), 0
  try:
    for step in range(start, total_steps):
      state, metrics = compiled(state, batch)
      window += 1
      done = step + 1
      if done % cfg.log_every == 0 or done == total_steps:
        metrics = jax.device_get(metrics)
        dt = (time.perf_counter() - t0) / window
        row = {k: float(v) for k, v in metrics.items()}
        row.update(step_time_s=dt, clips_per_s=cfg.batch_size / dt)
        if flops:
          row["tflops_per_device"] = flops / dt / 1e12 / jax.device_count()
          if cfg.peak_tflops:
            row["mfu"] = row["tflops_per_device"] / cfg.peak_tflops
        writer.write(done, row)
        bar.set_postfix(loss=f"{row['loss']:.3f}")
        t0, window = time.perf_counter(), 0
      evaluated = bool(evaluator) and (done % cfg.eval_every == 0 or done == total_steps)
      if evaluated:
        last_eval = evaluator(state)
        writer.write(done, {f"val/{k}": v for k, v in last_eval.items()})
      bar.update(1)
      final = done == total_steps
      # An evaluated step is always saved, with its metrics: the best one must exist on disk.
      if done % cfg.checkpoint_every == 0 or final or stop["now"] or evaluated:
        ckpt.save(done, state, it, force=True, metrics=last_eval if evaluated else None)
      if stop["now"]:
        log.info("SIGTERM: saved step %d, exiting", done)
        break
      if not final:
        batch = pipeline.to_global(next(it), batch_sharding)
    ckpt.wait()
    best = ckpt.best_step()
    if best is not None:
      log.info("best checkpoint: step %d (%s)", best, cfg.best_metric)
  finally:
    bar.close()
    ckpt.close()
    writer.close()
    signal.signal(signal.SIGTERM, previous)
  return TrainResult(last_eval, state, done, best)


class Evaluator:
  """Retrieval recall on the evaluation split (every video once, deterministic clips). The
  dataset and the jitted embedding step are built once and reused at every evaluation."""

  def __init__(self, cfg: Any, index: ShardIndex, encoder: tokenizer.ReportEncoder,
               eval_graphdef, mesh):
    self.dataset = pipeline.clip_dataset(
        index, cfg.data.eval_split, encoder,
        _pipeline_config(cfg, per_process(cfg.eval_batch_size), False), train=False)
    self.sharding = parallel.batch_sharding(mesh)
    self.embed = jax.jit(functools.partial(pretrain.embed_step, graphdef=eval_graphdef,
                                           cfg=cfg))

  def __call__(self, state: dict) -> dict[str, float]:
    from jax.experimental import multihost_utils
    parts: dict[str, list[np.ndarray]] = {"v": [], "t": [], "study": [], "valid": []}
    for batch in self.dataset:
      v, t = self.embed(state["params"], state["rest"], pipeline.to_global(batch, self.sharding))
      local = {"v": v, "t": t, "study": batch["study"], "valid": batch["valid"]}
      if jax.process_count() > 1:
        local = multihost_utils.process_allgather(local, tiled=True)
      for k, x in local.items():
        parts[k].append(np.asarray(x))
    out = {k: np.concatenate(x) for k, x in parts.items()}
    keep = out["valid"]
    return pretrain.recall_at_k(out["v"][keep], out["t"][keep], out["study"][keep])
