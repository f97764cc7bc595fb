"""Keep freed host memory mapped, so that XLA:CPU's per-call buffers stop page-faulting.

Why: XLA:CPU allocates an executable's temporaries as one block per call (5.6 GB for the MViT-S
+ BERT-base train step at batch 2) from one of its worker threads. glibc serves a large request
from a thread arena with a fresh `mmap` and unmaps it on `free`, so every step faults in every
page again: 1.4-1.7M page faults and ~10 s of kernel time (over 2 cores) per step. With a
single arena, no `mmap` for large blocks and no trimming, the block is carved from the heap and
reused by the next call: no page faults after the first step.

Opt-in (`--config.host_malloc=tuned`), because the gain is smaller than the fault count
suggests and has costs (benchmarks/RESULTS.md, both frameworks under the same setting): the
MViT-S + BERT-base step went 21.5 -> 20.0 s (PyTorch: 23.6 -> 17.7 s), while one arena
serialises `malloc` between threads, so XLA's multi-threaded compiler slowed down (96 -> 148 s)
and the tiny towers' step did not gain; the process also keeps its peak memory mapped. Applied
only where JAX will run on the CPU (no GPU/TPU plugin installed, or JAX_PLATFORMS=cpu) and glibc
is the C library.
"""

from __future__ import annotations

import ctypes
import importlib.util
import logging
import os

# glibc's mallopt parameters (malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
M_ARENA_MAX = -8
SETTINGS = ((M_ARENA_MAX, 1),        # every thread allocates from the main heap...
            (M_MMAP_MAX, 0),         # ...which serves large blocks too, instead of mmap
            (M_TRIM_THRESHOLD, -1))  # and never hands freed memory back ("-1": never trim)
CHOICES = ("system", "tuned")  # the trainer's `host_malloc` values: glibc's defaults, SETTINGS
ACCELERATOR_PLUGINS = ("jax_cuda12_plugin", "jax_cuda13_plugin", "jax_rocm60_plugin",
                       "jax_rocm7_plugin", "libtpu")


def jax_runs_on_cpu(environ=os.environ) -> bool:
  """True when JAX will pick the CPU backend: JAX_PLATFORMS starts with cpu, or no
  accelerator plugin is installed."""
  platforms = environ.get("JAX_PLATFORMS", "").strip().lower()
  if platforms:
    return platforms.split(",")[0] == "cpu"
  return not any(importlib.util.find_spec(name) is not None for name in ACCELERATOR_PLUGINS)


def keep_freed_memory(environ=os.environ, force: bool = False) -> bool:
  """Applies SETTINGS through glibc's `mallopt`; returns whether they are now in effect.

  Call it before JAX starts its backend: a thread picks its arena on its first allocation.
  Skipped (False) on GPU/TPU hosts unless `force`, and where the C library is not glibc.
  """
  if not (force or jax_runs_on_cpu(environ)):
    return False
  try:
    libc = ctypes.CDLL(None)
    libc.gnu_get_libc_version  # glibc only: mallopt's parameters differ elsewhere
    mallopt = libc.mallopt
  except (OSError, AttributeError):
    return False
  mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
  applied = all(mallopt(param, value) == 1 for param, value in SETTINGS)
  if not applied:
    logging.getLogger(__name__).warning("glibc mallopt refused %s; host memory settings left "
                                        "partly at their defaults", SETTINGS)
  return applied
