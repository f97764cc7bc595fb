"""XLA's CUDA compiler for this process only: the JAX CUDA plugin, loaded from its own folder.

The plugin is not installed into the environment: there, every `import jax` on a machine
without a GPU would try to start CUDA and log a traceback. It lives in a folder of its own,
`.aot-toolchain/` at the repository root (or $ECHOPRIME_AOT_TOOLCHAIN), made once with

  pip install --no-deps --target .aot-toolchain -r requirements-aot.txt

and only `python -m echoprime_jax.aot` (and its tests, in a subprocess) put it on sys.path.
`prepare()` must run before jax starts its backends: only the CPU backend starts (no GPU is
needed or touched; the plugin still compiles for the target) and autotuning, which needs a
device, is off.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import sys
from typing import Iterator
from unittest import mock

ENV = "ECHOPRIME_AOT_TOOLCHAIN"
DEFAULT = os.path.join(os.path.dirname(__file__), "..", "..", ".aot-toolchain")
PLUGINS = ("jax-cuda13-plugin", "jax-cuda12-plugin")
INSTALL = "pip install --no-deps --target .aot-toolchain -r requirements-aot.txt"


class ToolchainMissing(ValueError):
  """The CUDA compiler plugin is absent or does not match jaxlib (a user error: one line)."""


def folder() -> str:
  return os.path.abspath(os.environ.get(ENV) or DEFAULT)


def prepare() -> None:
  """Before jax starts: CPU backend only, no autotuning, the plugin's folder on sys.path."""
  os.environ["JAX_PLATFORMS"] = "cpu"
  flags = os.environ.get("XLA_FLAGS", "")
  if "--xla_gpu_autotune_level" not in flags:
    os.environ["XLA_FLAGS"] = (flags + " --xla_gpu_autotune_level=0").strip()
  path = folder()
  if os.path.isdir(path) and path not in sys.path:
    sys.path.insert(0, path)


def plugin_version() -> str:
  """The CUDA plugin's version; ToolchainMissing when there is none or it is not jaxlib's."""
  import jaxlib
  found = None
  for name in PLUGINS:
    try:
      found = importlib.metadata.version(name)
      break
    except importlib.metadata.PackageNotFoundError:
      continue
  if found is None:
    raise ToolchainMissing(f"the GPU compiler (JAX's CUDA plugin) is not in {folder()}; "
                           f"install it once with: {INSTALL}")
  if found != jaxlib.__version__:
    raise ToolchainMissing(f"the GPU compiler in {folder()} is version {found}, jaxlib is "
                           f"{jaxlib.__version__}; reinstall it with: {INSTALL}")
  return found


@contextlib.contextmanager
def target_checks(compute_capability: tuple[int, int]) -> Iterator[None]:
  """jax asks the host's default backend whether the GPU is a Hopper (cuDNN's 256-wide heads);
  compiling for a target from a CPU host, the target answers instead (inside the block)."""
  from jax._src.cudnn import fused_attention_stablehlo as checks

  def parse(capability: str) -> tuple[int, ...]:
    return tuple(int(x) for x in capability.split("."))

  with mock.patch.object(checks, "check_compute_capability",
                         lambda c: compute_capability >= parse(c)), \
       mock.patch.object(checks, "is_cuda_compute_capability_equal",
                         lambda c: compute_capability == parse(c)):
    yield
