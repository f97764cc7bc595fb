"""A run's checkpoints: one Orbax step folder per saved step, three items in it.

  params/       the model's parameters: all that inference restores (`restore_params`)
  train_state/  the rest of the train state (step, RNG state, optimizer state)
  data/         each process's Grain iterator state (Grain's Orbax handler)

Together they resume a run exactly: the state is restored onto the shardings of an abstract
target and the data iterator continues with the batch it would have given. Parameters are an
item of their own so that loading a model reads them alone and never needs the optimizer that
shaped the rest. Orbax writes a step to a temporary folder and renames it when complete: a run
killed mid-save resumes from the previous step.

Retention: the newest `max_to_keep` steps, plus (with `best_metric`) the step whose saved
evaluation metrics score highest on that key, however old it is (Orbax preservation policies:
LatestN OR BestN). Steps saved without metrics never count as "best".

Checkpoints written before the split (one `state` item holding everything) still resume
training; `restore_params` refuses them with the command that converts them.
"""

from __future__ import annotations

import os
from typing import Any

PARAMS, TRAIN_STATE, DATA, LEGACY_STATE = "params", "train_state", "data", "state"


class LegacyCheckpointError(ValueError):
  """A checkpoint from before parameters were saved apart."""


class Checkpointer:
  """Saves and restores (state, data iterator) by step; keeps the newest `max_to_keep` and the
  best by `best_metric` (higher is better) among steps saved with metrics. A state is any
  dict pytree; its "params" entry (if any) is saved as its own item."""

  def __init__(self, directory: str, max_to_keep: int = 3, async_save: bool = True,
               best_metric: str | None = None, read_only: bool = False):
    import orbax.checkpoint as ocp
    from orbax.checkpoint import checkpoint_managers as policies
    self._ocp = ocp
    self.directory = os.path.abspath(directory)
    self.best_metric = best_metric
    keep = [policies.LatestN(n=max_to_keep)]
    score = None
    if best_metric:
      score = lambda metrics: float(metrics[best_metric])  # noqa: E731
      keep.append(policies.BestN(get_metric_fn=score, reverse=False, n=1,
                                 keep_checkpoints_without_metrics=False))
    self.manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(
            preservation_policy=policies.AnyPreservationPolicy(keep),
            best_fn=score, best_mode="max",  # with best_fn set, Orbax also writes the metrics
            # read_only: another run's folder (e.g. towers for a later stage), left untouched
            create=not read_only, cleanup_tmp_directories=not read_only,  # killed saves
            read_only=read_only, enable_async_checkpointing=async_save))

  def best_step(self) -> int | None:
    """The kept step with the highest `best_metric` (None without best_metric or metrics)."""
    return self.manager.best_step() if self.best_metric else None

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def save(self, step: int, state: dict, data_iterator=None, force: bool = False,
           metrics: dict[str, float] | None = None) -> bool:
    """Starts saving `step` (asynchronously by default); True if a save was started.
    `metrics` (e.g. the evaluation at this step) are stored with it and rank it for `best`."""
    import grain
    save = self._ocp.args.StandardSave
    rest = {k: v for k, v in state.items() if k != "params"}
    args = {TRAIN_STATE: save(rest)}
    if "params" in state:
      args[PARAMS] = save(state["params"])
    if data_iterator is not None:
      args[DATA] = grain.checkpoint.CheckpointSave(data_iterator)
    return self.manager.save(step, args=self._ocp.args.Composite(**args), force=force,
                             metrics=metrics)

  def _step(self, step: int | None) -> int:
    step = self.manager.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"{self.directory}: no checkpoint to restore")
    return step

  def is_legacy(self, step: int) -> bool:
    """True for a step saved as one `state` item (before parameters were saved apart)."""
    folder = os.path.join(self.directory, str(step))
    return (os.path.isdir(os.path.join(folder, LEGACY_STATE))
            and not os.path.isdir(os.path.join(folder, TRAIN_STATE)))

  def restore(self, abstract_state: dict, data_iterator=None, step: int | None = None
              ) -> tuple[int, dict]:
    """-> (step, state) restored onto `abstract_state`'s shapes/dtypes/shardings; the data
    iterator (if given) is set to the saved position in place."""
    import grain
    step = self._step(step)
    restore = self._ocp.args.StandardRestore
    if self.is_legacy(step):
      args = {LEGACY_STATE: restore(abstract_state)}
    else:
      args = {TRAIN_STATE: restore({k: v for k, v in abstract_state.items() if k != "params"})}
      if "params" in abstract_state:
        args[PARAMS] = restore(abstract_state["params"])
    if data_iterator is not None:
      args[DATA] = grain.checkpoint.CheckpointRestore(data_iterator)
    restored = self.manager.restore(step, args=self._ocp.args.Composite(**args))
    if LEGACY_STATE in args:
      return step, restored[LEGACY_STATE]
    state = dict(restored[TRAIN_STATE])
    if PARAMS in args:
      state["params"] = restored[PARAMS]
    return step, state

  def restore_params(self, abstract_params: Any, step: int | None = None) -> tuple[int, Any]:
    """-> (step, params) alone, onto `abstract_params`' shapes/dtypes/shardings."""
    step = self._step(step)
    if self.is_legacy(step):
      run = os.path.dirname(self.directory)
      raise LegacyCheckpointError(
          f"{run}: its checkpoints were written by an older version (parameters not saved "
          f"apart); convert them once with: python -m echoprime_jax.train.upgrade_run {run}")
    restored = self.manager.restore(step, args=self._ocp.args.Composite(
        **{PARAMS: self._ocp.args.StandardRestore(abstract_params)}))
    return step, restored[PARAMS]

  def wait(self) -> None:
    """Blocks until any asynchronous save has finished."""
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()
