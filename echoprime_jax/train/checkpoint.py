"""Training checkpoints: model/optimizer state + the Grain iterator state, one Orbax step folder.

A checkpoint of step N holds `state/` (any pytree of jax.Arrays: params, optimizer state, step,
RNG keys; saved sharded, restored onto the shardings of an abstract target) and `data/` (each
process's Grain iterator state, via Grain's Orbax handler), so a resumed run continues with the
exact batch it would have seen. Orbax writes a step to a temporary folder and renames it when
complete: a run killed mid-save resumes from the previous step.

Retention: the newest `max_to_keep` steps, plus (with `best_metric`) the step whose saved
evaluation metrics score highest on that key, however old it is (Orbax preservation policies:
LatestN OR BestN). Steps saved without metrics never count as "best".
"""

from __future__ import annotations

import os
from typing import Any


class Checkpointer:
  """Saves and restores (state, data iterator) by step; keeps the newest `max_to_keep` and the
  best by `best_metric` (higher is better) among steps saved with metrics."""

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

  def save(self, step: int, state: Any, data_iterator=None, force: bool = False,
           metrics: dict[str, float] | None = None) -> bool:
    """Starts saving `step` (asynchronously by default); True if a save was started.
    `metrics` (e.g. the evaluation at this step) are stored with it and rank it for `best`."""
    import grain
    args = {"state": self._ocp.args.StandardSave(state)}
    if data_iterator is not None:
      args["data"] = grain.checkpoint.CheckpointSave(data_iterator)
    return self.manager.save(step, args=self._ocp.args.Composite(**args), force=force,
                             metrics=metrics)

  def restore(self, abstract_state: Any, data_iterator=None, step: int | None = None
              ) -> tuple[int, Any]:
    """-> (step, state) restored onto `abstract_state`'s shapes/dtypes/shardings; the data
    iterator (if given) is set to the saved position in place."""
    import grain
    step = self.manager.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"{self.directory}: no checkpoint to restore")
    args = {"state": self._ocp.args.StandardRestore(abstract_state)}
    if data_iterator is not None:
      args["data"] = grain.checkpoint.CheckpointRestore(data_iterator)
    restored = self.manager.restore(step, args=self._ocp.args.Composite(**args))
    return step, restored["state"]

  def wait(self) -> None:
    """Blocks until any asynchronous save has finished."""
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()
