"""Training checkpoints: model/optimizer state + the Grain iterator state, one Orbax step folder.

A checkpoint of step N holds `state/` (any pytree of jax.Arrays: params, optimizer state, step,
RNG keys; saved sharded, restored onto the shardings of an abstract target) and `data/` (each
process's Grain iterator state, via Grain's Orbax handler), so a resumed run continues with the
exact batch it would have seen. Orbax writes a step to a temporary folder and renames it when
complete: a run killed mid-save resumes from the previous step.
"""

from __future__ import annotations

import os
from typing import Any


class Checkpointer:
  """Saves and restores (state, data iterator) by step; keeps the newest `max_to_keep`."""

  def __init__(self, directory: str, max_to_keep: int = 3, async_save: bool = True):
    import orbax.checkpoint as ocp
    self._ocp = ocp
    self.directory = os.path.abspath(directory)
    self.manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                             cleanup_tmp_directories=True,  # killed saves
                                             enable_async_checkpointing=async_save))

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def save(self, step: int, state: Any, data_iterator=None, force: bool = False) -> bool:
    """Starts saving `step` (asynchronously by default); True if a save was started."""
    import grain
    args = {"state": self._ocp.args.StandardSave(state)}
    if data_iterator is not None:
      args["data"] = grain.checkpoint.CheckpointSave(data_iterator)
    return self.manager.save(step, args=self._ocp.args.Composite(**args), force=force)

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
