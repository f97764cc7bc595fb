#!/usr/bin/env bash
# The "compiled, not run" table of benchmarks/RESULTS.md: the paper setup's pretraining
# programs compiled for H200 / H100 targets on a CPU host (python -m echoprime_jax.aot), one
# JSON per row in benchmarks/aot/, then the table. ~3 minutes per row on 2 CPU cores.
#   bash benchmarks/aot.sh
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=benchmarks/aot
mkdir -p "$OUT"
aot() {  # NAME then the command's flags
  local name=$1; shift
  python -m echoprime_jax.aot --config configs/pretrain.py:echoprime --config.dtype=bfloat16 \
    "$@" --json "$OUT/$name.json"
}
aot h200_1x1x2 --target h200 --topology 1x1x2  # the paper: global batch 32 over two GPUs
# the same step with every GEMM on cuBLAS: without a GPU to autotune on, XLA gives its Triton
# GEMMs an untuned default (split-K over padded operands); a GPU host chooses by measuring
XLA_FLAGS="${XLA_FLAGS:-} --xla_gpu_enable_triton_gemm=false" python -m echoprime_jax.aot \
  --config configs/pretrain.py:echoprime --config.dtype=bfloat16 --target h200 \
  --topology 1x1x2 --programs train_step --json "$OUT/h200_1x1x2_cublas_gemm.json"
for b in 176 192 224 256 320 384; do  # larger per-device batches (no rematerialisation policy)
  aot "h200_1x1x2_b$b" --target h200 --topology 1x1x2 --config.batch_size=$b --programs train_step
done
for b in 32 256 384 512; do  # every MViT block and BERT layer recomputed in the backward pass
  aot "h200_1x1x2_remat_b$b" --target h200 --topology 1x1x2 --config.remat=blocks \
    --config.batch_size=$b --programs train_step
done
aot h100_1x1x8_fsdp8 --target h100 --topology 1x1x8 --config.mesh.data=1 --config.mesh.fsdp=8 \
  --programs train_step
aot h100_1x2x8_data2_fsdp8 --target h100 --topology 1x2x8 --config.mesh.data=2 \
  --config.mesh.fsdp=8 --programs train_step
for loss in dense chunked; do  # the CLIP loss whole on each device, or round the device ring
  chunked=$([[ $loss == chunked ]] && echo True || echo False)
  aot "h100_1x1x8_b256_$loss" --target h100 --topology 1x1x8 --config.batch_size=256 \
    --config.loss.chunked=$chunked --programs train_step
  aot "h100_1x2x8_b1024_$loss" --target h100 --topology 1x2x8 --config.batch_size=1024 \
    --config.loss.chunked=$chunked --programs train_step
done
python -m echoprime_jax.aot --config configs/views.py:echoprime --config.dtype=bfloat16 \
  --target h200 --topology 1x1x2 --json "$OUT/views_h200_1x1x2.json"
python -m echoprime_jax.aot --config configs/mil.py:echoprime --target h200 --topology 1x1x2 \
  --json "$OUT/mil_h200_1x1x2.json"
python benchmarks/aot_table.py "$OUT"/h200_1x1x2.json "$OUT"/h200_1x1x2_cublas_gemm.json \
  "$OUT"/h200_1x1x2_b*.json \
  "$OUT"/h200_1x1x2_remat_b32.json "$OUT"/h200_1x1x2_remat_b256.json \
  "$OUT"/h200_1x1x2_remat_b384.json "$OUT"/h200_1x1x2_remat_b512.json \
  "$OUT"/h100_1x1x8_fsdp8.json "$OUT"/h100_1x2x8_data2_fsdp8.json "$OUT"/h100_1x1x8_b256_*.json \
  "$OUT"/h100_1x2x8_b1024_*.json "$OUT"/views_h200_1x1x2.json "$OUT"/mil_h200_1x1x2.json
