"""host_malloc: when it applies, and that freed memory is really reused (page-fault counts)."""

import json
import os
import subprocess
import sys

from echoprime_jax.runtime import host_malloc

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Allocates, touches and frees 256 MB twice with plain malloc (no numpy: it asks for huge pages,
# which would hide the difference) and counts the page faults of touching the second block.
_PROBE = """
import ctypes, json, resource, sys
from echoprime_jax.runtime import host_malloc
applied = host_malloc.keep_freed_memory(force=True) if sys.argv[1] == "tuned" else False
libc = ctypes.CDLL(None)
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
size = 256 << 20
faults = []
for _ in range(2):
  p = libc.malloc(size)
  before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
  ctypes.memset(p, 1, size)
  faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
  libc.free(p)
print(json.dumps({"applied": applied, "faults": faults}))
"""


def _probe(mode: str) -> dict:
  out = subprocess.run([sys.executable, "-c", _PROBE, mode], cwd=ROOT, capture_output=True,
                       text=True, timeout=120, env={**os.environ, "PYTHONPATH": ROOT})
  assert out.returncode == 0, out.stderr
  return json.loads(out.stdout.strip().splitlines()[-1])


def test_freed_memory_is_reused_without_page_faults():
  system, tuned = _probe("system"), _probe("tuned")
  # (with transparent huge pages always on, a fault maps 2 MB: counts relative to the first touch)
  # glibc's default: the block is mmap-ed afresh and faulted in again as often as the first time
  assert system["faults"][0] > 100 and system["faults"][1] > 0.9 * system["faults"][0], system
  # tuned: the second block reuses the first one's pages
  assert tuned["applied"] is True
  assert tuned["faults"][0] > 100, tuned
  assert tuned["faults"][1] <= 0.01 * tuned["faults"][0], tuned


def test_applies_only_where_jax_runs_on_the_cpu():
  assert host_malloc.jax_runs_on_cpu({"JAX_PLATFORMS": "cpu"})
  assert not host_malloc.jax_runs_on_cpu({"JAX_PLATFORMS": "cuda,cpu"})
  assert not host_malloc.keep_freed_memory({"JAX_PLATFORMS": "tpu"})  # changes nothing there
