"""XLA flags the project sets before JAX starts its backends (CPU only; GPUs ignore them).

`--xla_cpu_enable_concurrency_optimized_scheduler=false`: XLA:CPU's default scheduler orders a
program to run independent ops concurrently, which keeps far more buffers alive. For MViT-S
forward+backward (batch 2, 2 cores) it cost 12.5 GB peak RSS and 27.8 s; the memory-minded
order takes 7.6 GB and 20.0 s. Must be in XLA_FLAGS before the first computation: `apply()`
runs at the top of the entry points (and the tests' conftest).
"""

from __future__ import annotations

import os

CPU_FLAGS = ("--xla_cpu_enable_concurrency_optimized_scheduler=false",)


def apply(environ=os.environ) -> str:
  """Appends each of CPU_FLAGS to XLA_FLAGS unless the user already set that flag; returns
  the resulting XLA_FLAGS."""
  current = environ.get("XLA_FLAGS", "")
  for flag in CPU_FLAGS:
    if flag.split("=")[0] not in current:
      current = f"{current} {flag}".strip()
  environ["XLA_FLAGS"] = current
  return current
