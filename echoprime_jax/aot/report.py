"""Compile a program for the target and read what it does: memory per device, FLOPs, attention
kernels, collectives, donation and the roofline bound. Nothing runs."""

from __future__ import annotations

import time
from typing import Any

import jax

from echoprime_jax.aot import hlo_report, roofline, toolchain
from echoprime_jax.aot.programs import Program
from echoprime_jax.aot.targets import Target
from echoprime_jax.models import compile_target

GiB = 2 ** 30


def compile_for(program: Program, target: Target):
  """The program traced as a GPU host would trace it, compiled by XLA's GPU compiler."""
  with compile_target.compiling_for("gpu"), toolchain.target_checks(target.compute_capability):
    lowered = program.jitted.lower(*program.args)
  return lowered.compile()


def xla_cost(compiled) -> dict[str, float]:
  """XLA's HLO cost analysis of the optimized per-device module, run by the CPU client (the
  compile-only executable has none of its own). Custom calls count 0 FLOPs here."""
  from jax._src.lib import xla_client
  module = compiled.runtime_executable().hlo_modules()[0]
  cost = xla_client._xla.hlo_module_cost_analysis(jax.devices("cpu")[0].client, module)
  return {"flops": float(cost.get("flops", 0.0)),
          "bytes_accessed": float(cost.get("bytes accessed", 0.0))}


def analyse(program: Program, target: Target) -> dict[str, Any]:
  """Compile `program` for `target` and summarise it."""
  t0 = time.perf_counter()
  compiled = compile_for(program, target)
  return summarise(compiled, program, target, time.perf_counter() - t0)


def summarise(compiled, program: Program, target: Target, compile_s: float) -> dict[str, Any]:
  """Memory, FLOPs, attention kernels, collectives, donation and roofline of a compiled
  program (see the module docstring of `hlo_report` for how the HLO is read)."""
  mem = compiled.memory_analysis()
  hlo = compiled.as_text()
  peak = (mem.argument_size_in_bytes + mem.output_size_in_bytes + mem.temp_size_in_bytes
          - mem.alias_size_in_bytes)
  cost = xla_cost(compiled)
  cudnn = hlo_report.custom_call_flops(hlo)
  flops = cost["flops"] + cudnn["attention"] + cudnn["conv"]
  attention = hlo_report.attention_kernels(hlo)
  kernels = [k for layer in attention for k in (layer["forward"], layer["backward"]) if k]
  collectives = hlo_report.collectives(hlo)
  donated = program.state_bytes_per_device
  return {
      "program": program.name, "global_batch": program.examples,
      "per_device_peak_bytes": int(peak), "device_memory_bytes": target.memory_bytes,
      "headroom": 1.0 - peak / target.memory_bytes,
      "memory": {"arguments": mem.argument_size_in_bytes, "outputs": mem.output_size_in_bytes,
                 "temp": mem.temp_size_in_bytes, "aliased": mem.alias_size_in_bytes},
      "state_bytes_per_device": donated,
      # donation taken up: the whole state's buffers reused for the new state
      "state_donated": bool(donated) and mem.alias_size_in_bytes >= donated,
      "aliased_buffers": hlo_report.aliased_parameters(hlo),
      "flops_per_device": flops, "flops_cudnn_attention": cudnn["attention"],
      "flops_cudnn_conv": cudnn["conv"],
      "bytes_accessed_per_device": cost["bytes_accessed"],
      "attention": attention,
      "attention_kernels": {k: kernels.count(k) for k in sorted(set(kernels))},
      "collectives": collectives,
      "collective_bytes_per_step": sum(c["bytes"] for c in collectives),
      "roofline": roofline.bound(flops, cost["bytes_accessed"], target),
      "compile_s": compile_s,
  }


def lines(result: dict[str, Any]) -> list[str]:
  """A program's result for the terminal."""
  r, m = result, result["roofline"]
  att = r["attention"]
  fully = sum(1 for a in att if a["forward"] == "cudnn" and a["backward"] in ("cudnn", ""))
  out = [
      f"{r['program']} (global batch {r['global_batch']}, compiled in {r['compile_s']:.0f} s)",
      f"  memory per device   peak {r['per_device_peak_bytes'] / GiB:.2f} GiB of "
      f"{r['device_memory_bytes'] / GiB:.1f} GiB (headroom {r['headroom']:.0%}); "
      f"arguments {r['memory']['arguments'] / GiB:.2f}, temp {r['memory']['temp'] / GiB:.2f}, "
      f"aliased {r['memory']['aliased'] / GiB:.2f} GiB",
      f"  FLOPs per device    {r['flops_per_device'] / 1e12:.2f} TFLOP "
      f"({r['flops_cudnn_attention'] / 1e12:.2f} in cuDNN attention, "
      f"{r['flops_cudnn_conv'] / 1e12:.2f} in cuDNN convolutions); HBM traffic "
      f"{r['bytes_accessed_per_device'] / 1e9:.1f} GB",
      f"  attention           {fully} of {len(att)} layers cuDNN fused (forward and backward); "
      f"kernels {r['attention_kernels']}",
  ]
  if r["state_bytes_per_device"]:
    out.append(f"  donation            state {r['state_bytes_per_device'] / GiB:.2f} GiB per "
               f"device, {'aliased to the new state' if r['state_donated'] else 'NOT aliased'}"
               f" ({r['aliased_buffers']} buffers)")
  for c in r["collectives"]:
    out.append(f"  collective          {c['kind']} {c['dtype']}: {c['count']} per step, "
               f"{c['bytes'] / 2 ** 20:.1f} MiB")
  if not r["collectives"]:
    out.append("  collective          none")
  out.append(f"  roofline (estimate) {m['step_time_bound_s'] * 1e3:.1f} ms per step, "
             f"{m['bound_by']}-bound (compute {m['compute_s'] * 1e3:.1f} ms, memory "
             f"{m['memory_s'] * 1e3:.1f} ms): MFU at most {m['mfu_bound']:.0%}")
  return out
