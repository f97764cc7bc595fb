"""What a compiled program does, read from its optimized HLO text: attention kernels per layer,
collectives with their sizes, donation, and FLOPs including the cuDNN calls XLA cannot count.

The towers name their layers in the program (`jax.named_scope`: "mvit_block3", "bert_layer7",
each layer's kernel under "attention"), so every instruction's `op_name` metadata says which
layer it belongs to, and whether it is the forward or the backward pass ("transpose(").
"""

from __future__ import annotations

import collections
import json
import math
import re
from typing import Any, Iterator

DTYPE_BYTES = {"pred": 1, "s4": 0.5, "u4": 0.5, "s8": 1, "u8": 1, "f8e4m3fn": 1, "f8e5m2": 1,
               "s16": 2, "u16": 2, "f16": 2, "bf16": 2, "s32": 4, "u32": 4, "f32": 4,
               "s64": 8, "u64": 8, "f64": 8, "c64": 8, "c128": 16, "token": 0}
COLLECTIVES = ("all-reduce", "all-gather", "reduce-scatter", "all-to-all", "collective-permute",
               "collective-broadcast")
_ARRAY = re.compile(r"\b([a-z]+[0-9]*[a-z0-9]*)\[([0-9,]*)\]")
_LAYER = re.compile(r"\b(mvit_block\d+|bert_layer\d+)\b")
_OP_NAME = re.compile(r'op_name="([^"]*)"')
_TARGET = re.compile(r'custom_call_target="([^"]*)"')
_OPERANDS = re.compile(r"operand_layout_constraints=\{(.*?)\}, [a-z_]+=")
_NAME = re.compile(r"%([\w.\-]+)")


def arrays(type_text: str) -> list[tuple[str, tuple[int, ...]]]:
  """(dtype, dims) of every array in an HLO type ("f32[2,3]{1,0}" or a tuple of them)."""
  out = []
  for dtype, dims in _ARRAY.findall(type_text):
    if dtype in DTYPE_BYTES:
      out.append((dtype, tuple(int(d) for d in dims.split(",") if d)))
  return out


def nbytes(dtype: str, dims: tuple[int, ...]) -> int:
  return int(DTYPE_BYTES[dtype] * math.prod(dims))


def type_bytes(type_text: str) -> int:
  """Bytes of every array in an HLO type (a tuple's summed)."""
  return sum(nbytes(*a) for a in arrays(type_text))


def operand_names(ins: dict[str, str]) -> list[str]:
  """The names of an instruction's operands (`instructions` row): those in its parentheses."""
  return _NAME.findall(ins["line"].split(")", 1)[0])


def instructions(hlo: str) -> Iterator[dict[str, str]]:
  """name, type, op and the rest of the line, for every instruction of every computation."""
  for line in hlo.splitlines():
    line = line.strip()
    if line.startswith("ROOT "):
      line = line[5:]
    if not line.startswith("%") or " = " not in line:
      continue
    name, rhs = line.split(" = ", 1)
    if rhs.startswith("("):  # a tuple type: up to its matching parenthesis
      depth = 0
      for i, ch in enumerate(rhs):
        depth += ch == "("
        depth -= ch == ")"
        if depth == 0:
          break
      type_text, rest = rhs[:i + 1], rhs[i + 1:].lstrip()
    else:
      type_text, _, rest = rhs.partition(" ")
    op = rest.split("(", 1)[0]
    yield {"name": name[1:], "type": type_text, "op": op, "line": rest}


def attention_kernels(hlo: str) -> list[dict[str, Any]]:
  """Per attention layer: {"layer", "forward", "backward"}, each "cudnn" (cuDNN fused flash
  attention), "xla" (XLA's dots and softmax) or "" (none: an inference program has no
  backward). Layers in model order (video blocks, then text layers)."""
  seen: dict[str, dict[str, set]] = collections.defaultdict(
      lambda: {"forward": set(), "backward": set()})
  for ins in instructions(hlo):
    op_name = _OP_NAME.search(ins["line"])
    # e.g. "jit(step)/transpose(jvp(mvit_block3))/jvp(mvit_block3)/checkpoint/attention/..."
    if op_name is None or "/attention" not in op_name.group(1):
      continue
    layer = _LAYER.search(op_name.group(1))
    if layer is None:
      continue
    target = _TARGET.search(ins["line"])
    target = target.group(1) if target else ""
    if target.startswith("__cudnn$fmha"):
      direction = "backward" if "Backward" in target else "forward"
      seen[layer.group(1)][direction].add("cudnn")
    elif ins["op"] == "dot" or target.startswith("__cublas"):
      direction = "backward" if "transpose(" in op_name.group(1) else "forward"
      seen[layer.group(1)][direction].add("xla")

  def order(name: str) -> tuple[int, int]:
    return (0 if name.startswith("mvit") else 1, int(re.sub(r"\D", "", name)))

  return [{"layer": name, **{d: "+".join(sorted(k)) for d, k in seen[name].items()}}
          for name in sorted(seen, key=order)]


def collectives(hlo: str) -> list[dict[str, Any]]:
  """Per kind and dtype: how many the program issues and their bytes (the buffer each moves:
  the reduced / gathered result). A loop body is counted once (the towers have no loops)."""
  table: dict[tuple[str, str], dict[str, Any]] = {}
  for ins in instructions(hlo):
    kind = ins["op"].removesuffix("-start")
    if kind not in COLLECTIVES or ins["op"].endswith("-done"):
      continue
    shapes = arrays(ins["type"])
    if not shapes:
      continue
    dtype, dims = max(shapes, key=lambda s: nbytes(*s))
    row = table.setdefault((kind, dtype), {"kind": kind, "dtype": dtype, "count": 0,
                                            "bytes": 0})
    row["count"] += 1
    row["bytes"] += nbytes(dtype, dims)
  return sorted(table.values(), key=lambda r: -r["bytes"])


def custom_call_bytes(hlo: str) -> float:
  """HBM bytes of the cuDNN / cuBLAS calls, which XLA's cost analysis counts as 0: each reads
  its operands and writes its results once (scratch workspace, a trailing u8 / s8 result,
  excluded). A fused flash-attention call streams Q, K, V (and O, dO backward) through on-chip
  memory, so this is its HBM traffic too."""
  listed = list(instructions(hlo))
  types = {ins["name"]: ins["type"] for ins in listed}
  total = 0
  for ins in listed:
    target = _TARGET.search(ins["line"])
    if ins["op"] != "custom-call" or not target or not target.group(1).startswith(
        ("__cudnn$", "__cublas$")):
      continue
    results = arrays(ins["type"])
    if len(results) > 1 and results[-1][0] in ("u8", "s8"):
      results = results[:-1]
    total += sum(nbytes(*a) for a in results)
    total += sum(type_bytes(types.get(name, "")) for name in operand_names(ins))
  return float(total)


def custom_call_flops(hlo: str) -> dict[str, float]:
  """FLOPs of the cuDNN calls, which XLA's cost analysis counts as 0, from their shapes:
    attention  forward 2*B*N*T*S*(Hqk + Hv), backward 2*B*N*T*S*(3*Hqk + 2*Hv) (the logits
               recomputed, then dV, dP, dQ, dK), from the logits' shape (B, N, T, S) and the
               q / v operands' head dims
    conv       2 * (elements of the forward output) * (kernel elements / output features),
               for the forward, input-gradient and filter-gradient calls alike
    gemm       (cuBLAS, where XLA's Triton GEMMs are off) 2 * (output elements) * (the lhs's
               contracting size)
  -> {"attention": ..., "conv": ..., "gemm": ...}."""
  listed = list(instructions(hlo))
  types = {ins["name"]: ins["type"] for ins in listed}
  total = {"attention": 0.0, "conv": 0.0, "gemm": 0.0}
  for ins in listed:
    target = _TARGET.search(ins["line"])
    target = target.group(1) if target else ""
    if target.startswith("__cudnn$fmha"):
      total["attention"] += _attention_flops(ins, "Backward" in target)
    elif target.startswith("__cudnn$conv"):
      total["conv"] += _conv_flops(ins, target, types)
    elif target.startswith("__cublas$"):
      total["gemm"] += _gemm_flops(ins, types)
  return total


def _gemm_flops(ins: dict[str, str], types: dict[str, str]) -> float:
  numbers = _backend_config(ins["line"]).get("gemm_backend_config", {}).get(
      "dot_dimension_numbers", {})
  names = operand_names(ins)
  lhs = arrays(types.get(names[0], "")) if names else []
  result = arrays(ins["type"])
  if not lhs or not result:
    return 0.0
  contracting = math.prod(lhs[0][1][int(d)] for d in numbers.get("lhs_contracting_dimensions",
                                                                    []))
  return 2.0 * math.prod(result[0][1]) * contracting


def _attention_flops(ins: dict[str, str], backward: bool) -> float:
  config = _backend_config(ins["line"]).get("cudnn_fmha_backend_config", {})
  logits = [int(d) for d in config.get("intermediate_tensor_shape", {}).get("dimensions", [])]
  constraints = _OPERANDS.search(ins["line"])
  operands = arrays(constraints.group(1)) if constraints else []
  if len(logits) != 4 or len(operands) < 3:
    return 0.0
  hq, hv = operands[0][1][-1], operands[2][1][-1]
  return 2.0 * math.prod(logits) * ((3 * hq + 2 * hv) if backward else (hq + hv))


def _conv_flops(ins: dict[str, str], target: str, types: dict[str, str]) -> float:
  labels = re.search(r"dim_labels=(\w+)_(\w+)->(\w+)", ins["line"])
  shapes = [arrays(types.get(n, "")) for n in operand_names(ins)]
  result = arrays(ins["type"])
  if not labels or len(shapes) < 2 or not all(shapes[:2]) or not result:
    return 0.0
  if "BackwardFilter" in target:  # (x, dy) -> kernel
    out, kernel = shapes[1][0][1], result[0][1]
  elif "BackwardInput" in target:  # (dy, kernel) -> dx
    out, kernel = shapes[0][0][1], shapes[1][0][1]
  else:  # (x, kernel[, bias...]) -> y
    out, kernel = result[0][1], shapes[1][0][1]
  out_features = kernel[labels.group(2).index("o")]
  return 2.0 * math.prod(out) * math.prod(kernel) / out_features


def _backend_config(line: str) -> dict[str, Any]:
  start = line.find("backend_config=")
  if start < 0:
    return {}
  text = line[start + len("backend_config="):]
  try:
    return json.JSONDecoder().raw_decode(text)[0]
  except ValueError:
    return {}


def aliased_parameters(hlo: str) -> int:
  """How many (parameter, output) buffer pairs the module aliases (donation taken up)."""
  header = hlo.split("\n", 1)[0]
  match = re.search(r"input_output_alias=\{(.*?)\}, (?:entry_computation_layout|"
                    r"allow_spmd|frontend|num_partitions)", header)
  return match.group(1).count("-alias)") if match else 0


def computations(hlo: str) -> dict[str, tuple[bool, str]]:
  """name -> (is the entry, its text) for every computation of a module's text."""
  out = {}
  for block in re.split(r"\n(?=(?:ENTRY )?%[\w.\-]+ \()", hlo):
    match = re.match(r"(ENTRY )?%([\w.\-]+) \(", block)
    if match:
      out[match.group(2)] = (bool(match.group(1)), block.rstrip())
  return out


def loops(hlo: str) -> list[tuple[str, int]]:
  """(body computation, known trip count) of every while loop XLA could count."""
  out = []
  for ins in instructions(hlo):
    if ins["op"] != "while":
      continue
    body = re.search(r"body=%([\w.\-]+)", ins["line"])
    trips = _backend_config(ins["line"]).get("known_trip_count", {}).get("n")
    if body and trips:
      out.append((body.group(1), int(trips)))
  return out


def body_module(hlo: str, body: str) -> str:
  """A module whose entry is a loop body (with every other computation it may call), for
  costing one iteration on its own."""
  comps = computations(hlo)
  others = [text for name, (entry, text) in comps.items() if not entry and name != body]
  text = "HloModule body\n\n" + "\n\n".join(others) + "\n\nENTRY " + comps[body][1] + "\n"
  return re.sub(r" stack_frame_id=\d+", "", text)  # the frames table stays behind
