"""The "compiled, not run" table of benchmarks/RESULTS.md from `python -m echoprime_jax.aot`
JSON files (one per target / topology / setting).

  python -m echoprime_jax.aot --config configs/pretrain.py:echoprime --config.dtype=bfloat16 \
      --target h200 --topology 1x1x2 --json aot/h200_1x1x2.json        # ... one per row
  python benchmarks/aot_table.py aot/*.json

Every figure is the compiled program's (XLA's GPU compiler, no GPU); the step time is a
roofline bound, not a measurement.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks.common import publish  # noqa: E402
from echoprime_jax.aot.report import cudnn_layers  # noqa: E402

GiB = 2 ** 30


def rows(report: dict, label: str) -> list[str]:
  out = []
  mesh = " x ".join(f"{k} {v}" for k, v in report["mesh"].items())
  for p in report["programs"]:
    att = p["attention"]
    fused = cudnn_layers(p)
    roof = p["roofline"]
    out.append(
        f"| {label} | {report['device']} {report['topology']} ({mesh}) | {p['program']} | "
        f"{p['global_batch']} | {p['per_device_peak_bytes'] / GiB:.1f} GiB "
        f"({p['headroom']:.0%}) | {p['flops_per_device'] / 1e12:.2f} | "
        f"{p['bytes_accessed_per_device'] / 1e9:.0f} | {fused}/{len(att)} | "
        f"{p['collective_bytes_per_step'] / 2 ** 20:.0f} | "
        f"{'yes' if p['state_donated'] else ('-' if not p['state_bytes_per_device'] else 'NO')}"
        f" | {roof['step_time_bound_s'] * 1e3:.1f} ({roof['bound_by']}) | "
        f"{roof['mfu_bound']:.0%} of {roof.get('precision', 'bf16')} |")
  return out


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("reports", nargs="+", help="JSON files from python -m echoprime_jax.aot "
                 "--json; the row label is the file name")
  p.add_argument("--no-write", dest="write", action="store_false",
                 help="print only; do not update benchmarks/RESULTS.md")
  args = p.parse_args()
  reports = [(os.path.splitext(os.path.basename(f))[0], json.load(open(f)))
             for f in args.reports]
  first = reports[0][1]
  lines = [f"### Compiled, not run: the paper setup's programs on H200 / H100 targets "
           f"({first['date']}, jax {first['jax']}, CUDA plugin {first['cuda_plugin']})", "",
           "Per device. Peak = arguments + outputs + temporaries - aliased (headroom of the "
           "GPU's memory); HBM traffic = XLA's cost analysis of the optimized program plus the "
           "operands and results of the cuDNN / cuBLAS calls it counts as 0; "
           "attention = layers on cuDNN fused attention forward and backward; collectives = "
           "bytes per step; step time = roofline bound at the data-sheet dense peak of the "
           "program's matmul precision (bf16 989, tf32 494, fp32 67 TFLOP/s) and HBM "
           "bandwidth, an estimate; MFU = the most that bound allows.", "",
           "| setting | target (mesh) | program | global batch | peak (headroom) | TFLOP | "
           "HBM GB | cuDNN attention | collectives MiB | state donated | step bound ms | "
           "MFU bound |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
  for label, report in reports:
    lines += rows(report, label)
  default = "--xla_gpu_autotune_level=0"  # toolchain.prepare's: no GPU to autotune on
  flagged = [f"{label}: `{r['xla_flags']}`" for label, r in reports
             if "xla_flags" in r and r["xla_flags"].strip() != default]
  unrecorded = [label for label, r in reports if "xla_flags" not in r]
  if flagged:
    lines += ["", "XLA flags besides the default `" + default + "`: " + "; ".join(flagged) + "."]
  if unrecorded:
    lines += ["", "XLA flags not recorded (older JSON): " + ", ".join(unrecorded) + "."]
  lines += ["", "Reproduce: `bash benchmarks/aot.sh` (each row's JSON in benchmarks/aot/)."]
  publish("aot", lines, args.write)


if __name__ == "__main__":
  main()
