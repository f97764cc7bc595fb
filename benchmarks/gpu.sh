#!/usr/bin/env bash
# The one prepared script for a GPU day: one H200 (or H100), under 8 minutes.
#
#   here, once:   bash benchmarks/gpu.sh --fetch-wheels     # pure-Python / cp312 wheels the GPU
#                                                           # image lacks, into .whl/ (git-ignored)
#   on the GPU:   bash benchmarks/gpu.sh                    # (the device tool: carry [".whl"])
#
# Measures, in one run (benchmarks/gpu_step.py): the paper setup's bf16 training step (MViT-S +
# BiomedBERT-base, 16 clips per GPU, built as the trainer builds it): step time, clips/s, MFU
# against the data-sheet peak and against a bf16 matmul measured on the spot, peak memory, the
# attention kernel each layer runs, fp32 parity of the three towers against the CPU, and the
# compiled estimate (`python -m echoprime_jax.aot`) of the same program beside the measurement.
# Output: $OUT (the device tool's folder) or runs/gpu: gpu_step.json, gpu_step.md, log.txt.
# GEMM kernels: the compiled estimate could not autotune (benchmarks/RESULTS.md), so while the
# 8 minutes last the step is timed again with every GEMM on cuBLAS ($OUT/cublas_gemm/), the
# other choice the GPU's autotuner weighs (no parity pass the second time).
set -euo pipefail
cd "$(dirname "$0")/.."
WHEELS=(ml-collections simplejpeg pydicom grain array-record tensorboardX)
if [[ "${1:-}" == "--fetch-wheels" ]]; then
  mkdir -p .whl
  grep -qx "/.whl/" .git/info/exclude 2>/dev/null || echo "/.whl/" >> .git/info/exclude
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform any \
    -d .whl "${WHEELS[@]}"
  du -sh .whl
  exit 0
fi
OUT="${OUT:-runs/gpu}"
mkdir -p "$OUT"
if compgen -G ".whl/*.whl" > /dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl
  export PYTHONPATH="/tmp/site:$PWD"
fi
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv \
  | tee "$OUT/gpu.txt"
export PYTHONUNBUFFERED=1
timeout 450 python3 benchmarks/gpu_step.py --out "$OUT" 2>&1 | tee "$OUT/log.txt"
left=$((470 - SECONDS))
if (( left >= 90 )); then
  mkdir -p "$OUT/cublas_gemm"
  XLA_FLAGS="${XLA_FLAGS:-} --xla_gpu_enable_triton_gemm=false" timeout "$left" \
    python3 benchmarks/gpu_step.py --no-parity --out "$OUT/cublas_gemm" 2>&1 \
    | tee "$OUT/cublas_gemm/log.txt" || echo "cuBLAS pass stopped after ${left} s"
else
  echo "no time left for the cuBLAS pass (${left} s)"
fi
