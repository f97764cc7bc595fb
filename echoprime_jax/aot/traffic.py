"""Where a compiled program's HBM traffic goes, instruction by instruction.

Each instruction of the entry computation is charged the bytes of its result and of its
operands, as if every one were read from and written to HBM once (a slice: its result, read
and written). That is cruder than XLA's cost analysis (a fused broadcast is charged its whole
source, a fused slice its whole operand) and so sums higher; it is for finding the big movers,
not for the roofline (`report.xla_cost`).

Groups: the pass (`forward`, `backward` from the autodiff `transpose(` in op_name, `update`
for named ops outside both: the optimizer; `unnamed` for what XLA created itself, e.g.
split-K pads), the kind (a fusion by its computation's name, a custom call by its target) and
the layer ("mvit_block3", "bert_layer7").
"""

from __future__ import annotations

import collections
import re
from typing import Any

from echoprime_jax.aot import hlo_report

# bookkeeping, not data movement
_FREE = {"parameter", "constant", "get-tuple-element", "tuple", "bitcast", "after-all",
         "partition-id", "replica-id", "opt-barrier"}
_CALLS = re.compile(r"calls=%([\w.\-]+)")
_GEMM_OR_PAD = ("gemm_fusion", "cublas", "fused_pad", "pad")
_SLICES = {"slice", "dynamic-slice", "wrapped_slice"}


def _entry(hlo: str) -> str:
  return hlo[hlo.index("\nENTRY"):] if "\nENTRY" in hlo else hlo


def charges(hlo: str) -> list[dict[str, Any]]:
  """One row per data-moving instruction of the entry computation: name, kind, pass, layer,
  bytes (result + operands)."""
  types: dict[str, str] = {}
  rows = []
  for ins in hlo_report.instructions(_entry(hlo)):
    types[ins["name"]] = ins["type"]
    if ins["op"] in _FREE:
      continue
    line = ins["line"]
    kind = ins["op"]
    if kind == "fusion" and (m := _CALLS.search(line)):
      kind = re.sub(r"[.\d]+$", "", m.group(1)).removesuffix("_computation")
      kind = re.sub(r"[.\d]+$", "", kind)
    elif kind == "custom-call" and (m := hlo_report._TARGET.search(line)):
      kind = m.group(1)
    if kind in _SLICES:  # reads only what it keeps (e.g. a parameter's gradient out of the
      moved = 2 * hlo_report.type_bytes(ins["type"])  # all-reduced buffer of all of them)
    else:
      moved = hlo_report.type_bytes(ins["type"]) + sum(
          hlo_report.type_bytes(types.get(o, "")) for o in hlo_report.operand_names(ins))
    op_name = (hlo_report._OP_NAME.search(line) or [None, ""])[1]
    if not op_name:
      phase = "unnamed"
    elif "transpose(" in op_name:
      phase = "backward"
    elif "jvp(" in op_name:
      phase = "forward"
    else:
      phase = "update"
    layer = (hlo_report._LAYER.search(op_name) or [None, "-"])[1]
    rows.append({"name": ins["name"], "kind": kind, "phase": phase, "layer": layer,
                 "bytes": moved})
  return rows


def is_elementwise(kind: str) -> bool:
  """Everything XLA generates itself except GEMMs and pads: elementwise, reductions, layout
  changes, concatenations (custom calls, cuDNN's and cuBLAS's, are not)."""
  return not kind.startswith(("__", "all-", "reduce-scatter", "collective")) and \
      not any(k in kind for k in _GEMM_OR_PAD)


def breakdown(hlo: str, top: int = 12) -> dict[str, Any]:
  """-> {"total", "by_phase", "by_kind" (the `top` largest), "elementwise",
  "elementwise_by_layer" (the `top` largest)}, bytes."""
  rows = charges(hlo)
  elementwise = [r for r in rows if is_elementwise(r["kind"])]
  return {"total": sum(r["bytes"] for r in rows),
          "by_phase": dict(_sum_by(rows, "phase").most_common()),
          "by_kind": dict(_sum_by(rows, "kind").most_common(top)),
          "elementwise": sum(r["bytes"] for r in elementwise),
          "elementwise_by_layer": dict(_sum_by(elementwise, "layer").most_common(top))}


def _sum_by(rows: list[dict[str, Any]], key: str) -> collections.Counter:
  out: collections.Counter = collections.Counter()
  for r in rows:
    out[r[key]] += r["bytes"]
  return out
