"""The trainer every stage runs through, top to bottom: mesh -> data -> model -> shard -> step ->
checkpoint -> evaluate -> loop. Runs unchanged on one CPU, one host with several GPUs, or many
hosts (every process runs this same function; each reads its own slice of the data).

  result = train(stages.pretrain.setup, cfg, workdir)

Resume: the newest checkpoint in WORKDIR/checkpoints (params, optimizer state, step, RNG state,
the Grain iterator) is restored onto this run's shardings, so a killed run continues with the
batch it would have seen and ends bit-identical on CPU. SIGTERM (preemption) saves and exits.
The run folder's layout is `run.folder`'s; its checkpoints `run.checkpoints`'.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import os
import signal
import time
from typing import Any, Callable

import jax
from flax import nnx

from echoprime_jax import parallel
from echoprime_jax.data import pipeline
from echoprime_jax.run.checkpoints import Checkpointer
from echoprime_jax.run.folder import RunFolder
from echoprime_jax.train import optimizer
from echoprime_jax.train import step as step_lib
from echoprime_jax.train.metrics_writer import MetricsWriter
from echoprime_jax.train.stage import Stage

log = logging.getLogger("echoprime_jax.train")


@dataclasses.dataclass
class TrainResult:
  metrics: dict[str, float]  # the last evaluation (empty if none ran)
  state: dict  # final train state (sharded jax.Arrays)
  step: int
  best_step: int | None = None  # the kept checkpoint with the best cfg.best_metric


def train(setup: Callable[[Any, RunFolder, Any], Stage], cfg: Any, workdir: str, *,
          allow_safe_changes: bool = False) -> TrainResult:
  """Runs (or resumes) a stage to cfg.total_steps (or cfg.epochs); see the module docstring.
  `setup` is a stage module's `setup` (train/stages/). A folder with checkpoints resumes only
  under the config it recorded (`RunFolder.check_resume`)."""
  run = RunFolder(workdir)
  config = cfg.to_dict() if hasattr(cfg, "to_dict") else dict(cfg)
  run.check_resume(config, allow_safe_changes)
  os.makedirs(run.root, exist_ok=True)  # on every host (no shared file system needed to start)
  if jax.process_index() == 0:
    run.write_config(config)

  # -- mesh
  mesh = parallel.make_mesh(dict(cfg.mesh))
  batch_sharding = parallel.batch_sharding(mesh)
  log.info("mesh %s over %d devices, %d processes", dict(mesh.shape), jax.device_count(),
           jax.process_count())

  # -- data (and what the stage precomputes from it)
  stage = setup(cfg, run, mesh)
  total_steps = int(cfg.total_steps) or max(1, math.ceil(cfg.epochs * stage.num_examples /
                                                         cfg.batch_size))

  # -- model, optimizer and step (abstract: nothing allocated yet)
  program = step_program(cfg, stage, mesh, total_steps)

  # -- shard: the state is created already sharded (or restored onto the shardings)
  it = iter(stage.train_data)
  ckpt, start, state = restore_or_init(cfg, run, program, it)
  if start == 0 and stage.init_params is not None:
    state["params"] = jax.device_put(stage.init_params(state["params"]),
                                     program.shardings["params"])

  # -- step, evaluate, loop, checkpoint: traced under the mesh (kernels that pin their
  # operands' layout read it: parallel.constrain_batch)
  with jax.set_mesh(mesh):
    first = pipeline.to_global(next(it), batch_sharding)
    compiled = program.step.lower(state, first).compile()
    evaluator = (stage.make_evaluator(program.eval_graphdef)
                 if cfg.eval_every and stage.make_evaluator is not None else None)
    result = loop(cfg, run, compiled=compiled, state=state, first=first, it=it, start=start,
                  total_steps=total_steps, batch_sharding=batch_sharding, evaluator=evaluator,
                  ckpt=ckpt, desc=stage.name)

  # -- finish (MIL: exports), with the best evaluated checkpoint's parameters
  if stage.finish is not None:
    params = result.state["params"]
    if result.best_step is not None and result.best_step != result.step:
      params = restore_params(run, cfg, result.state["params"], result.best_step)
      log.info("finishing with the best checkpoint, step %d", result.best_step)
    stage.finish(result, params, result.state["rest"])
  return result


@dataclasses.dataclass
class StepProgram:
  """A stage's model, optimizer and jitted step, built abstractly (nothing allocated): what
  `train` runs, and what `echoprime_jax.aot` compiles for an accelerator it does not have."""
  graphdef: Any  # the model's structure in training mode
  eval_graphdef: Any  # ... in evaluation mode (dropout off)
  make_state: Callable[[], dict]  # -> a fresh train state (`step.init_state`)
  abstract_state: dict  # its ShapeDtypeStructs
  shardings: dict  # the state's NamedShardings (`parallel.tree_shardings`)
  step: Any  # jitted (state, global batch) -> (state, metrics), the state donated

  def sharded_state(self) -> dict:
    """The state's ShapeDtypeStructs with their shardings (a restore target, AOT arguments)."""
    return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                        self.abstract_state, self.shardings)


def step_program(cfg: Any, stage: Stage, mesh, total_steps: int) -> StepProgram:
  """The model, optimizer schedule over total_steps, state shardings on `mesh` and jitted step
  of `stage` (its create_model, prepare, loss and constrain) under `cfg`."""
  create = functools.partial(stage.create_model, cfg.seed)
  abstract_model = nnx.eval_shape(create)
  graphdef, abstract_params, _ = nnx.split(abstract_model, nnx.Param, ...)
  abstract_model.eval()
  eval_graphdef = nnx.split(abstract_model, nnx.Param, ...)[0]
  tx, schedule = optimizer.make_optimizer(cfg.optim, abstract_params, total_steps)
  make_state = functools.partial(step_lib.init_state, create, tx)
  abstract_state = jax.eval_shape(make_state)
  shardings = parallel.tree_shardings(abstract_state, mesh, cfg.min_fsdp_size)
  step = step_lib.jit_train_step(graphdef, tx, schedule, prepare=stage.prepare, loss=stage.loss,
                                 constrain=stage.constrain, state_shardings=shardings,
                                 batch_sharding=parallel.batch_sharding(mesh))
  return StepProgram(graphdef, eval_graphdef, make_state, abstract_state, shardings, step)


def restore_or_init(cfg: Any, run: RunFolder, program: StepProgram, it):
  """-> (checkpointer, start step, state). The newest checkpoint of the run is restored onto
  the program's shardings (with the data iterator `it`); without one, a fresh state is created
  jitted straight into those shardings and start is 0."""
  shardings = program.shardings
  ckpt = Checkpointer(run.checkpoints, cfg.keep_checkpoints,
                      best_metric=(cfg.best_metric or None) if cfg.eval_every else None)
  if ckpt.latest_step() is not None:
    start, state = ckpt.restore(program.sharded_state(), it)
    log.info("resumed from step %d", start)
    return ckpt, start, state
  return ckpt, 0, jax.jit(program.make_state, out_shardings=shardings)()


def restore_params(run: RunFolder, cfg: Any, like, step: int):
  """The parameters of `step` of this run, onto the shardings of `like` (the live params)."""
  target = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=a.sharding),
                        like)
  ckpt = Checkpointer(run.checkpoints, best_metric=cfg.best_metric or None, read_only=True)
  try:
    return ckpt.restore_params(target, step)[1]
  finally:
    ckpt.close()


def loop(cfg: Any, run: RunFolder, *, compiled, state: dict, first: dict, it, start: int,
         total_steps: int, batch_sharding, evaluator, ckpt: Checkpointer,
         desc: str) -> TrainResult:
  """step -> log -> evaluate -> checkpoint, until total_steps or SIGTERM (which saves and
  exits). `compiled(state, batch) -> (state, metrics)`; `first` is the (global) batch it was
  compiled for; `evaluator(state) -> metrics` or None. cfg fields: log_every, eval_every,
  checkpoint_every, batch_size, peak_tflops, best_metric."""
  is_main = jax.process_index() == 0
  flops = step_lib.flops_per_step(compiled)
  writer = MetricsWriter(run, enabled=is_main)

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
