"""The README's current main command: `python -m echoprime_jax.describe`."""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _describe(*args) -> str:
  out = subprocess.run([sys.executable, "-m", "echoprime_jax.describe", *args], cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr
  return out.stdout


def test_echoprime_towers_have_the_reference_sizes():
  text = _describe()
  # parameter counts of torchvision mvit_v2_s (+512 head), BERT-base without pooler + 768->512
  # projection, torchvision convnext_base with 11 classes
  assert "video       34,623,872  video (1, 16, 224, 224, 3) float32 -> (1, 512) float32" in text
  assert "text       109,285,376" in text and "-> (1, 512) float32" in text
  assert "views       87,577,739  images (1, 224, 224, 3) float32 -> (1, 11) float32" in text


def test_tiny_variant_and_bf16_override():
  text = _describe("--config", "configs/towers.py:tiny", "--config.dtype=bfloat16")
  assert "video (1, 8, 64, 64, 3) float32 -> (1, 64) bfloat16" in text


@pytest.mark.parametrize("flag", ["--help"])
def test_help_lists_flags(flag):
  out = subprocess.run([sys.executable, "-m", "echoprime_jax.describe", flag], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
  assert out.returncode == 1, out.stderr[-2000:]  # absl exits 1 after printing --help
  assert "--config" in out.stdout and "--tower" in out.stdout
  assert "--tower: Describe a converted tower checkpoint directory" in out.stdout
