"""A lower bound on step time from a compiled program's FLOPs and memory traffic: an estimate,
never a measurement.

  compute time = FLOPs / the target's dense peak at the program's matmul precision (bf16 for
                 16-bit compute, tf32 for float32 at default precision, fp32 at HIGHEST)
  memory time  = bytes moved to and from HBM / the target's HBM bandwidth
  bound        = the larger of the two: the step cannot be faster on that GPU
  MFU bound    = compute time / bound: the model-FLOP utilisation the bound allows (100% when
                 compute-bound; below that, memory traffic caps it)

FLOPs are the program's as executed (padding included); bytes are XLA's cost analysis of the
optimized program (each kernel's operands and results, i.e. assuming nothing stays in cache).
"""

from __future__ import annotations

from echoprime_jax.aot.targets import Target, peak_flops


def bound(flops: float, bytes_accessed: float, target: Target, precision: str = "bf16"
          ) -> dict[str, float | str]:
  compute_s = flops / peak_flops(target, precision)
  memory_s = bytes_accessed / target.hbm_bytes_per_s
  step_s = max(compute_s, memory_s)
  return {"compute_s": compute_s, "memory_s": memory_s, "step_time_bound_s": step_s,
          "bound_by": "compute" if compute_s >= memory_s else "memory",
          "mfu_bound": compute_s / step_s if step_s else 0.0,
          "arithmetic_intensity": flops / bytes_accessed if bytes_accessed else 0.0,
          "precision": precision,
          "note": "estimate from compiled FLOPs and bytes, not a measurement"}
