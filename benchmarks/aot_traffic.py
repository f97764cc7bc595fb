"""Where the paper step's HBM traffic goes: the pretraining train step compiled for a GPU on
this CPU host (as `python -m echoprime_jax.aot` compiles it), each instruction charged its
result and operands (`echoprime_jax/aot/traffic.py`), grouped by pass, kind and layer.

  python benchmarks/aot_traffic.py                        # paper setup, 2 x H200, bf16
  XLA_FLAGS=--xla_gpu_enable_triton_gemm=false python benchmarks/aot_traffic.py  # GEMMs on cuBLAS

The per-instruction count is cruder than XLA's cost analysis (the roofline's); both totals are
printed. ~3 minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from echoprime_jax.aot import toolchain  # noqa: E402

toolchain.prepare()  # before jax starts


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--variant", default="echoprime", help="configs/pretrain.py variant")
  p.add_argument("--dtype", default="bfloat16", help="compute dtype (default bfloat16)")
  p.add_argument("--target", default="h200", choices=["h200", "h100"], help="GPU to compile for")
  p.add_argument("--topology", default="1x1x2", help="PARTITIONSxHOSTSxDEVICES_PER_HOST")
  p.add_argument("--top", type=int, default=12, help="rows per grouping (default 12)")
  args = p.parse_args()

  import jax
  from jax.experimental import topologies

  from configs import pretrain
  from echoprime_jax import parallel
  from echoprime_jax.aot import programs, report, targets, traffic
  cfg = pretrain.get_config(args.variant)
  cfg.dtype = args.dtype
  target = targets.TARGETS[args.target]
  topo = topologies.get_topology_desc(platform="cuda", target_config=target.config_text(),
                                      topology=args.topology)
  mesh = parallel.make_mesh(dict(cfg.mesh), devices=list(topo.devices))
  step = next(p for p in programs.stage_programs(cfg, mesh) if p.name == "train_step")
  with jax.set_mesh(mesh):
    compiled = report.compile_for(step, target)
  hlo = compiled.as_text()
  found = traffic.breakdown(hlo, top=args.top)
  xla_bytes = report.xla_cost(compiled, hlo)["bytes_accessed"]
  gb = lambda v: f"{v / 1e9:7.1f} GB"
  print(f"{cfg.get('variant', args.variant)} train_step, {args.dtype}, {target.name} "
        f"{args.topology}; XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}")
  print(f"HBM traffic per device per step: {gb(xla_bytes)} (XLA's cost analysis + library "
        f"calls: the roofline's), {gb(found['total'])} (per-instruction count below)")
  for title, group in (("by pass", found["by_phase"]), ("by kind", found["by_kind"])):
    print(f"\n{title}:")
    for name, moved in group.items():
      print(f"  {gb(moved)}  {name}")
  print(f"\nelementwise, reduction, layout and concatenation fusions (not GEMMs, pads or library "
        f"calls): {gb(found['elementwise'])}; by layer:")
  for name, moved in found["elementwise_by_layer"].items():
    print(f"  {gb(moved)}  {name if name != '-' else '(outside the layers)'}")


if __name__ == "__main__":
  main()
