"""The GPUs a program can be compiled for, and the figures a roofline needs.

Each target's device description is written out as the text of XLA's
`stream_executor.GpuTargetConfigProto` (the format of XLA's
`xla/backends/gpu/target_config/specs/*.txtpb`), from the public data sheet figures below.
The fields XLA reads when compiling: compute capability (sm_90: Hopper, so cuDNN flash
attention and its 256-wide heads), memory size, bandwidth, SM count, clocks, cache and
shared-memory limits.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Target:
  key: str  # the --target name
  name: str  # the device kind XLA reports
  memory_bytes: int  # HBM per GPU as the driver reports it
  hbm_bytes_per_s: float  # HBM bandwidth
  bf16_flops_per_s: float  # dense bf16 tensor-core peak (no sparsity)
  tf32_flops_per_s: float  # dense tf32 tensor-core peak: float32 matmuls at default precision
  fp32_flops_per_s: float  # CUDA-core float32: float32 matmuls at HIGHEST precision
  sm_count: int = 132
  clock_ghz: float = 1.98
  memory_clock_khz: int = 0
  l2_bytes: int = 50 * 2 ** 20
  compute_capability: tuple[int, int] = (9, 0)

  def config_text(self) -> str:
    """The GpuTargetConfigProto text jax's topology API takes as `target_config`."""
    major, minor = self.compute_capability
    return f"""gpu_device_info {{
  threads_per_block_limit: 1024
  threads_per_warp: 32
  shared_memory_per_block: 49152
  shared_memory_per_core: 233472
  threads_per_core_limit: 2048
  core_count: {self.sm_count}
  fpus_per_core: 128
  block_dim_limit_x: 2147483647
  block_dim_limit_y: 65535
  block_dim_limit_z: 65535
  memory_bandwidth: {int(self.hbm_bytes_per_s)}
  l2_cache_size: {self.l2_bytes}
  clock_rate_ghz: {self.clock_ghz}
  device_memory_size: {self.memory_bytes}
  shared_memory_per_block_optin: 232448
  cuda_compute_capability {{ major: {major} minor: {minor} }}
  registers_per_core_limit: 65536
  registers_per_block_limit: 65536
  thread_dim_limit_x: 1024
  thread_dim_limit_y: 1024
  thread_dim_limit_z: 64
  device_vendor: "NVIDIA Corporation"
  name: "{self.name}"
}}
platform_name: "CUDA"
dnn_version_info {{ major: 9 minor: 10 patch: 0 }}
device_description_str: "{self.name}"
"""


# NVIDIA's data sheets: H200 SXM 141 GB HBM3e at 4.8 TB/s; H100 SXM 80 GB HBM3 at 3.35 TB/s;
# both 989 TFLOP/s dense BF16 (1,979 with sparsity), 494 dense TF32, 67 FP32, 132 SMs. Memory sizes as the driver
# reports them (XLA's specs for these GPUs).
TARGETS = {
    "h200": Target("h200", "NVIDIA H200", memory_bytes=151_397_597_184,
                   hbm_bytes_per_s=4.8e12, bf16_flops_per_s=989e12, tf32_flops_per_s=494e12,
                   fp32_flops_per_s=67e12),
    "h100": Target("h100", "NVIDIA H100 80GB HBM3", memory_bytes=84_942_979_072,
                   hbm_bytes_per_s=3.35e12, bf16_flops_per_s=989e12, tf32_flops_per_s=494e12,
                   fp32_flops_per_s=67e12),
}


def parse_topology(text: str) -> tuple[int, int, int]:
  """"PxHxD" (partitions x hosts x devices per host) -> the three numbers."""
  parts = text.lower().split("x")
  if len(parts) != 3 or not all(p.isdigit() and int(p) > 0 for p in parts):
    raise ValueError(f"--topology {text!r}: expected PARTITIONSxHOSTSxDEVICES, e.g. 1x1x2 "
                     "(two GPUs on one host) or 1x2x8 (two hosts of eight)")
  return tuple(int(p) for p in parts)  # type: ignore[return-value]


def peak_flops(target: Target, precision: str) -> float:
  """The target's dense peak for a program's matmul precision: "bf16", "tf32" or "fp32"."""
  return {"bf16": target.bf16_flops_per_s, "tf32": target.tf32_flops_per_s,
          "fp32": target.fp32_flops_per_s}[precision]
