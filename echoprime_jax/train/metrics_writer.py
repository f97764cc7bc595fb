"""Training metrics to the run folder's metrics.jsonl (one JSON object per line) and
TensorBoard.

Only the main process writes (others are disabled), so multi-host runs log once.
"""

from __future__ import annotations

import json
import logging
import re
import time

from echoprime_jax.run.folder import RunFolder

log = logging.getLogger("echoprime_jax.train")


class MetricsWriter:

  def __init__(self, run: RunFolder, enabled: bool = True, tensorboard: bool = True):
    self.enabled = enabled
    self._jsonl = None
    self._tb = None
    if not enabled:
      return
    self._jsonl = open(run.metrics, "a")
    if tensorboard:
      from tensorboardX import SummaryWriter
      self._tb = SummaryWriter(run.tensorboard)

  def write(self, step: int, values: dict[str, float]) -> None:
    if not self.enabled:
      return
    self._jsonl.write(json.dumps({"step": int(step), "time": time.time(), **values}) + "\n")
    self._jsonl.flush()
    if self._tb is not None:
      for k, v in values.items():  # TensorBoard tags: no "@" or spaces ("R@1/Left Atrium")
        self._tb.add_scalar(re.sub(r"[^\w./-]", "_", k), v, step)
    log.info("step %d: %s", step, ", ".join(f"{k}={v:.4g}" for k, v in values.items()))

  def close(self) -> None:
    if self._jsonl is not None:
      self._jsonl.close()
    if self._tb is not None:
      self._tb.close()
