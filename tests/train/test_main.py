"""The trainer's entry point: an unknown host allocator setting is refused before any work."""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_unknown_host_malloc_is_refused(tmp_path):
  run = subprocess.run([sys.executable, "-m", "echoprime_jax.train", "--config",
                        "configs/pretrain.py:tiny", "--workdir", str(tmp_path / "run"),
                        "--config.host_malloc=jemalloc"],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert run.returncode != 0
  assert "host_malloc must be 'system' or 'tuned', got 'jemalloc'" in run.stderr
  assert not (tmp_path / "run").exists()  # refused before the run folder was made
