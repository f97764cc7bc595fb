"""The paper setup's training step on the GPU it runs on: measured beside the compiled estimate.

  python benchmarks/gpu_step.py --out runs/gpu            # on a GPU host (benchmarks/gpu.sh)
  python benchmarks/gpu_step.py --variant tiny --steps 2  # the same script on a CPU, to check it

Builds the pretraining step the way the trainer does (`aot.programs.pretrain_step`: model,
optimizer, shardings, donation) over this host's devices, with random inputs of the pipeline's
layout, and reports in one run:
  * measured step time (median of --steps after --warmup), clips/s, peak device memory
  * MFU: the compiled program's FLOPs (`aot.report`, cuDNN calls counted from their shapes) over
    the step time, against the dense bf16 peak (989 TFLOP/s for an H100 / H200) and against a
    bf16 matrix product measured here
  * the attention kernel every layer runs (from the program the device executes)
  * the roofline bound of the same compiled program (the estimate `python -m echoprime_jax.aot`
    gives without a GPU), beside the measurement
  * fp32 parity of the three towers (MViT-S, BERT-base, ConvNeXt-base; random weights) between
    this device and the CPU, at full matmul precision
Writes gpu_step.json and gpu_step.md to --out.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def random_batch(abstract: dict, vocab: int, seed: int = 0) -> dict:
  """Arrays of the abstract batch's shapes: clips of noise, full reports, identity
  augmentation, one study per clip."""
  import jax
  rng = np.random.default_rng(seed)
  out = {}
  for k, a in abstract.items():
    if k == "video":
      v = rng.integers(0, 256, a.shape, dtype=np.uint8)
    elif k == "text_ids":
      v = rng.integers(1, vocab, a.shape).astype(a.dtype)
    elif k in ("study", "record"):
      v = np.arange(a.shape[0]).astype(a.dtype)
    elif k == "aug_affine":
      v = np.broadcast_to(np.eye(3, dtype=np.float32)[:2], a.shape).copy()
    elif k == "aug_intensity":
      v = np.ones(a.shape, np.float32)
    elif np.dtype(a.dtype) == np.bool_ or k.endswith("mask"):
      v = np.ones(a.shape, a.dtype)
    else:
      v = np.zeros(a.shape, a.dtype)
    out[k] = jax.device_put(v, a.sharding)
  return out


def matmul_tflops() -> float:
  """A bf16 8192^3 product on this device, TFLOP/s (the attainable peak)."""
  import jax
  import jax.numpy as jnp
  x = jax.random.normal(jax.random.key(0), (8192, 8192), jnp.bfloat16)
  f = jax.jit(lambda a: a @ a)
  f(x).block_until_ready()
  t = time.perf_counter()
  for _ in range(10):
    y = f(x)
  y.block_until_ready()
  return 10 * 2 * 8192 ** 3 / (time.perf_counter() - t) / 1e12


def tower_parity() -> list[dict]:
  """Max |device - CPU| of each tower's fp32 output, same random weights and inputs."""
  import jax
  import jax.numpy as jnp
  from flax import nnx

  from echoprime_jax.models import bert, convnext, mvit
  rng = np.random.default_rng(1)
  towers = [
      ("MViT-S 16x224", lambda: mvit.MViT(mvit.mvit_v2_s(), rngs=nnx.Rngs(0)),
       (rng.normal(size=(2, 16, 224, 224, 3)).astype(np.float32),)),
      ("BERT-base 512", lambda: bert.Bert(bert.BertConfig(), rngs=nnx.Rngs(0)),
       (rng.integers(1, 30522, (2, 512)).astype(np.int32), np.ones((2, 512), np.int32))),
      ("ConvNeXt-base 224", lambda: convnext.ConvNeXt(convnext.convnext("base", num_classes=11),
                                                      rngs=nnx.Rngs(0)),
       (rng.normal(size=(2, 224, 224, 3)).astype(np.float32),)),
  ]
  rows = []
  for name, make, inputs in towers:
    outs = []
    for device in (jax.devices()[0], jax.devices("cpu")[0]):
      with jax.default_device(device), jax.default_matmul_precision("highest"):
        model = make()
        model.eval()
        graphdef, state = nnx.split(model)
        fn = jax.jit(lambda s, *a: nnx.merge(graphdef, s)(*a))
        outs.append(np.asarray(fn(state, *[jnp.asarray(x) for x in inputs]), np.float64))
    rows.append({"tower": name, "max_abs_diff": float(np.abs(outs[0] - outs[1]).max()),
                 "max_abs_output": float(np.abs(outs[1]).max())})
  return rows


def write(path: str, text: str) -> None:
  """A reader never sees half a file: a temporary sibling, then renamed."""
  with open(path + ".tmp", "w") as f:
    f.write(text)
  os.replace(path + ".tmp", path)


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--variant", default="echoprime", help="configs/pretrain.py variant")
  p.add_argument("--per_device_batch", type=int, default=16,
                 help="clips per device (the paper: 32 over two GPUs)")
  p.add_argument("--dtype", default="bfloat16", help="compute dtype")
  p.add_argument("--steps", type=int, default=10, help="timed steps")
  p.add_argument("--warmup", type=int, default=3, help="untimed steps first")
  p.add_argument("--target", default="h200", help="aot target whose peak and bandwidth the "
                 "roofline uses (h200, h100)")
  p.add_argument("--no-parity", dest="parity", action="store_false",
                 help="skip the fp32 tower parity against the CPU")
  p.add_argument("--out", default="runs/gpu", help="folder for gpu_step.json / .md")
  args = p.parse_args()

  import jax

  from configs import pretrain as pretrain_config
  from echoprime_jax import parallel
  from echoprime_jax.aot import hlo_report, programs, report, targets
  cfg = pretrain_config.get_config(args.variant)
  cfg.dtype = args.dtype
  cfg.batch_size = args.per_device_batch * jax.device_count()
  mesh = parallel.make_mesh({"data": -1, "fsdp": 1})
  step, train_batch, _ = programs.pretrain_step(cfg, mesh)
  state = jax.jit(step.make_state, out_shardings=step.shardings)()
  batch = random_batch(train_batch, cfg.towers.text.vocab_size)
  t0 = time.perf_counter()
  with jax.set_mesh(mesh):  # traced as the trainer traces it
    compiled = step.step.lower(state, batch).compile()
  compile_s = time.perf_counter() - t0
  target = targets.TARGETS[args.target]
  program = programs.Program("train_step", step.step, (),
                             programs.bytes_per_device(step.sharded_state()), cfg.batch_size)
  estimate = report.summarise(compiled, program, target, compile_s)
  times = []
  for i in range(args.warmup + args.steps):
    t = time.perf_counter()
    state, metrics = compiled(state, batch)
    jax.block_until_ready(metrics)
    if i >= args.warmup:
      times.append(time.perf_counter() - t)
  step_s = statistics.median(times)
  device = jax.devices()[0]
  stats = device.memory_stats() or {}
  flops = estimate["flops_per_device"]
  peak = matmul_tflops() if device.platform == "gpu" else 0.0
  result = {
      "date": datetime.date.today().isoformat(), "device": device.device_kind,
      "devices": jax.device_count(), "jax": jax.__version__, "variant": args.variant,
      "dtype": args.dtype, "global_batch": cfg.batch_size, "compile_s": compile_s,
      "step_s_median": step_s, "step_s_all": times, "clips_per_s": cfg.batch_size / step_s,
      "peak_device_bytes": stats.get("peak_bytes_in_use"),
      "flops_per_device": flops, "tflops_per_device": flops / step_s / 1e12,
      "mfu_vs_datasheet": flops / step_s / target.bf16_flops_per_s,
      "matmul_tflops_measured": peak,
      "mfu_vs_measured_matmul": flops / step_s / (peak * 1e12) if peak else None,
      "attention": hlo_report.attention_kernels(compiled.as_text()),
      "compiled_estimate": {k: estimate[k] for k in ("per_device_peak_bytes", "roofline",
                                                     "bytes_accessed_per_device",
                                                     "collectives", "state_donated")},
      "tower_parity_fp32": tower_parity() if args.parity else [],
  }
  os.makedirs(args.out, exist_ok=True)
  write(os.path.join(args.out, "gpu_step.json"), json.dumps(result, indent=1, default=str))
  roof = estimate["roofline"]
  kernels = sorted({f"{a['forward']}/{a['backward']}" for a in result["attention"]})
  lines = [f"### Training step on {device.device_kind} x{jax.device_count()} "
           f"({result['date']}, jax {jax.__version__})", "",
           "| figure | measured | compiled estimate |", "|---|---|---|",
           f"| step time, global batch {cfg.batch_size} ({args.dtype}) | {step_s * 1e3:.1f} ms | "
           f">= {roof['step_time_bound_s'] * 1e3:.1f} ms ({roof['bound_by']}-bound) |",
           f"| MFU (dense bf16 peak {target.bf16_flops_per_s / 1e12:.0f} TFLOP/s) | "
           f"{result['mfu_vs_datasheet']:.1%} | <= {roof['mfu_bound']:.0%} |",
           f"| peak memory per device | {(result['peak_device_bytes'] or 0) / 2 ** 30:.2f} GiB | "
           f"{estimate['per_device_peak_bytes'] / 2 ** 30:.2f} GiB |",
           f"| attention kernels (forward/backward) | {', '.join(kernels)} | |",
           f"| bf16 8192^3 matmul | {peak:.0f} TFLOP/s | |", ""]
  for row in result["tower_parity_fp32"]:
    lines.append(f"- fp32 parity {row['tower']}: max |device - CPU| {row['max_abs_diff']:.2e} "
                 f"(outputs up to {row['max_abs_output']:.2f})")
  text = "\n".join(lines)
  write(os.path.join(args.out, "gpu_step.md"), text + "\n")
  print(text)


if __name__ == "__main__":
  main()
