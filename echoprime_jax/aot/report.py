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


def xla_cost(compiled, hlo: str) -> dict[str, float]:
  """XLA's HLO cost analysis of the optimized per-device module, run by the CPU client (the
  compile-only executable has none of its own), plus the cuDNN / cuBLAS calls it counts as 0,
  FLOPs and bytes alike (`hlo_report.custom_call_flops`, `custom_call_bytes`). The analysis
  counts a loop body once: each loop with a known trip count n adds n - 1 more of its body's
  cost (a module of the body alone)."""
  from jax._src.lib import xla_client
  from jaxlib import _hlo

  cpu = jax.devices("cpu")[0].client

  def analysed(module) -> tuple[float, float]:
    cost = xla_client._xla.hlo_module_cost_analysis(cpu, module)
    return float(cost.get("flops", 0.0)), float(cost.get("bytes accessed", 0.0))

  flops, nbytes = analysed(compiled.runtime_executable().hlo_modules()[0])
  nbytes += hlo_report.custom_call_bytes(hlo)
  cudnn = hlo_report.custom_call_flops(hlo)
  trips = []
  for body, n in hlo_report.loops(hlo):
    text = hlo_report.body_module(hlo, body)
    body_flops, body_bytes = analysed(_hlo.hlo_module_from_text(text))
    body_cudnn = hlo_report.custom_call_flops(text)
    flops += (n - 1) * body_flops
    nbytes += (n - 1) * (body_bytes + hlo_report.custom_call_bytes(text))
    for kind in cudnn:
      cudnn[kind] += (n - 1) * body_cudnn[kind]
    trips.append(n)
  return {"flops": flops + sum(cudnn.values()), "bytes_accessed": nbytes,
          "cudnn_attention": cudnn["attention"], "cudnn_conv": cudnn["conv"],
          "loop_trip_counts": trips}


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
  cost = xla_cost(compiled, hlo)
  flops = cost["flops"]
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
      "flops_per_device": flops, "flops_cudnn_attention": cost["cudnn_attention"],
      "flops_cudnn_conv": cost["cudnn_conv"], "loop_trip_counts": cost["loop_trip_counts"],
      "bytes_accessed_per_device": cost["bytes_accessed"],
      "attention": attention,
      "attention_kernels": {k: kernels.count(k) for k in sorted(set(kernels))},
      "collectives": collectives,
      "collective_bytes_per_step": sum(c["bytes"] for c in collectives),
      "roofline": roofline.bound(flops, cost["bytes_accessed"], target, program.precision),
      "compile_s": compile_s,
  }


def cudnn_layers(result: dict[str, Any]) -> int:
  """Attention layers on cuDNN's fused kernel throughout: forward, and backward where the
  program trains (it donates a state)."""
  backward = ("cudnn",) if result["state_bytes_per_device"] else ("cudnn", "")
  return sum(1 for a in result["attention"]
             if a["forward"] == "cudnn" and a["backward"] in backward)


def lines(result: dict[str, Any]) -> list[str]:
  """A program's result for the terminal."""
  r, m = result, result["roofline"]
  att = r["attention"]
  fully = cudnn_layers(r)
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
      (f"  attention           {fully} of {len(att)} layers cuDNN fused (forward and "
       f"backward); kernels {r['attention_kernels']}" if att else
       "  attention           none (no attention layers)"),
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
  out.append(f"  roofline (estimate) {m['step_time_bound_s'] * 1e3:.1f} ms per step at the "
             f"{m['precision']} peak, "
             f"{m['bound_by']}-bound (compute {m['compute_s'] * 1e3:.1f} ms, memory "
             f"{m['memory_s'] * 1e3:.1f} ms): MFU at most {m['mfu_bound']:.0%}")
  return out
