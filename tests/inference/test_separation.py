"""Inference apart from training: the commands and library that load and use a run import
nothing from `echoprime_jax.train` (that no optimizer is built on the way is
test_load_run's: flax.nnx itself imports optax, so the import alone proves nothing)."""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_inference_modules_never_import_training_code():
  code = """
import importlib, pkgutil, sys
import echoprime_jax.inference, echoprime_jax.retrieval, echoprime_jax.evaluation
import echoprime_jax.render, echoprime_jax.run
names = ["echoprime_jax.export", "echoprime_jax.interpret", "echoprime_jax.index",
         "echoprime_jax.probe", "echoprime_jax.describe"]
for pkg in (echoprime_jax.inference, echoprime_jax.retrieval, echoprime_jax.evaluation,
            echoprime_jax.render, echoprime_jax.run):
  names += [pkg.__name__ + "." + m.name for m in pkgutil.iter_modules(pkg.__path__)]
for name in names:
  importlib.import_module(name)
bad = sorted(m for m in sys.modules if m.startswith("echoprime_jax.train"))
print(len(names), "modules;", "imported:", bad)
"""
  out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                       timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  assert "imported: []" in out.stdout, out.stdout
  assert int(out.stdout.split()[0]) >= 25  # the walk really reached the packages' modules


def test_models_import_nothing_from_data_prep():
  code = """
import importlib, pkgutil, sys
import echoprime_jax.models as models
for m in pkgutil.iter_modules(models.__path__):
  importlib.import_module("echoprime_jax.models." + m.name)
print("imported:", sorted(m for m in sys.modules if m.split(".")[0] == "data_prep"))
"""
  out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                       timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  assert "imported: []" in out.stdout, out.stdout
