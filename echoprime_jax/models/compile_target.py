"""The platform a program is being traced for: the default backend, unless a caller compiles
ahead of time for another (`echoprime_jax.aot` traces the trainer's step on a CPU host for a GPU).

Trace-time choices that depend on the hardware (the attention kernel, XLA:CPU-only rewrites of
the backward pass) read `platform()` instead of `jax.default_backend()`, so a program compiled
for a GPU target from a CPU host is the one a GPU host would build.

  with compile_target.compiling_for("gpu"):
    jax.jit(step).lower(*abstract_args).compile()

The setting is a context variable: scoped to the `with` block (and to its thread), nothing
global changes. jax caches a jitted function's trace by its argument shapes, not by this
setting: trace a function under one setting only (`echoprime_jax.aot` traces everything inside
the block).
"""

from __future__ import annotations

import contextlib
import contextvars
from typing import Iterator

import jax

_PLATFORM: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "echoprime_compile_platform", default=None)

_ALIASES = {"cuda": "gpu", "rocm": "gpu"}


def platform() -> str:
  """"cpu", "gpu" or "tpu": the platform of the program being traced."""
  chosen = _PLATFORM.get()
  return chosen if chosen is not None else _ALIASES.get(jax.default_backend(),
                                                        jax.default_backend())


@contextlib.contextmanager
def compiling_for(target: str) -> Iterator[None]:
  """Trace (and compile) for `target` ("gpu", "cuda", "cpu", "tpu") inside the block."""
  token = _PLATFORM.set(_ALIASES.get(target, target))
  try:
    yield
  finally:
    _PLATFORM.reset(token)
