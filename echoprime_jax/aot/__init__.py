"""Compiling the stages' real programs for a GPU that this host does not have (deviceless AOT).

  python -m echoprime_jax.aot --config configs/pretrain.py:echoprime --target h200 \
      --topology 1x1x2 --json out.json

`toolchain` loads XLA's CUDA compiler (kept out of every other process), `targets` describes the
GPUs, `abstract_batch` the inputs, `programs` builds each stage's jitted programs the way the
trainer does, `hlo_report` reads the compiled program (memory, FLOPs, attention kernels,
collectives, donation) and `roofline` turns FLOPs and bytes into a step-time bound.
"""
