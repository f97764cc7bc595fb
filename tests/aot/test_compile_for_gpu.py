"""The stages' programs compile for two H200s on this CPU host (echoprime_jax.aot), with every
attention layer on cuDNN's fused kernel, the train state donated and the memory in bounds.

Runs the command in a subprocess: XLA's CUDA compiler (.aot-toolchain/, installed by .ci/run
from requirements-aot.txt) is loaded only there. A regression in sharding, donation or the
kernels the towers pick for a GPU fails here, without a GPU.
"""

import json
import os
import subprocess
import sys

import pytest

from echoprime_jax.models import bert, mvit

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _aot(*args, env=None):
  return subprocess.run([sys.executable, "-m", "echoprime_jax.aot", *args], cwd=ROOT,
                        capture_output=True, text=True, timeout=900,
                        env={**os.environ, **(env or {})})


@pytest.fixture(scope="module")
def tiny_on_two_h200(tmp_path_factory):
  out = tmp_path_factory.mktemp("aot") / "tiny.json"
  run = _aot("--config", "configs/pretrain.py:tiny", "--config.dtype=bfloat16", "--target",
             "h200", "--topology", "1x1x2", "--json", str(out))
  assert run.returncode == 0, run.stderr[-3000:]
  return json.loads(out.read_text()), run.stdout


def test_every_attention_layer_is_cudnn_fused_in_training(tiny_on_two_h200):
  report, stdout = tiny_on_two_h200
  assert report["devices"] == 2 and report["mesh"] == {"data": 2, "fsdp": 1}
  train = {p["program"]: p for p in report["programs"]}["train_step"]
  layers = [f"mvit_block{i}" for i in range(len(mvit.mvit_tiny().blocks))] + \
           [f"bert_layer{i}" for i in range(bert.bert_tiny().num_hidden_layers)]
  assert [a["layer"] for a in train["attention"]] == layers
  for a in train["attention"]:
    assert (a["forward"], a["backward"]) == ("cudnn", "cudnn"), a
  assert train["flops_cudnn_attention"] > 0
  assert "28 layers" not in stdout and f"{len(layers)} of {len(layers)} layers cuDNN" in stdout


def test_state_donated_and_memory_in_bounds(tiny_on_two_h200):
  report, _ = tiny_on_two_h200
  train = {p["program"]: p for p in report["programs"]}["train_step"]
  # the whole state's buffers are reused for the new state: no second copy at the peak
  assert train["state_donated"] and train["memory"]["aliased"] >= train["state_bytes_per_device"]
  assert 0 < train["per_device_peak_bytes"] < 0.8 * train["device_memory_bytes"]
  assert train["headroom"] > 0.2
  # data parallel: the gradients are all-reduced (bf16 compute: at least the params' bytes / 2)
  reduced = sum(c["bytes"] for c in train["collectives"] if c["kind"] == "all-reduce")
  assert reduced >= train["state_bytes_per_device"] / 8  # state = params + 2 Adam moments, f32
  roof = train["roofline"]
  assert roof["step_time_bound_s"] == max(roof["compute_s"], roof["memory_s"]) > 0
  assert "estimate" in roof["note"]


def test_evaluation_program_has_no_backward_and_no_donation(tiny_on_two_h200):
  report, _ = tiny_on_two_h200
  embed = {p["program"]: p for p in report["programs"]}["eval_embed"]
  assert all(a["forward"] == "cudnn" and a["backward"] == "" for a in embed["attention"])
  assert embed["state_bytes_per_device"] == 0 and not embed["state_donated"]
  assert embed["collectives"] == []  # embeddings stay sharded by batch: nothing to exchange


def test_without_the_compiler_one_line_and_exit_2(tmp_path):
  run = _aot("--config", "configs/pretrain.py:tiny", "--target", "h200",
             env={"ECHOPRIME_AOT_TOOLCHAIN": str(tmp_path / "none")})
  if run.returncode == 0:
    pytest.fail("compiled without a toolchain folder: is a CUDA plugin installed into the "
                "environment itself? (it belongs in .aot-toolchain/, requirements-aot.txt)")
  assert run.returncode == 2, run.stderr[-2000:]
  lines = [line for line in run.stderr.splitlines() if line.strip()]
  assert len(lines) == 1 and "requirements-aot.txt" in lines[0], run.stderr


@pytest.mark.parametrize("args,says", [
    (["--target", "h200"], "--config"),
    (["--config", "configs/pretrain.py:tiny", "--topology", "1x1x3"], "multiple of 3"),
    (["--config", "configs/pretrain.py:tiny", "--topology", "2x8"], "PARTITIONSxHOSTSxDEVICES"),
    (["--config", "configs/towers.py:tiny"], "covers the stages pretrain, views, mil"),
    (["--config", "configs/pretrain.py:tiny", "--programs", "nope"], "this stage has"),
])
def test_bad_arguments_one_line_and_exit_2(args, says):
  run = _aot(*args)
  assert run.returncode == 2, run.stderr[-2000:]
  lines = [line for line in run.stderr.splitlines()
           if line.strip() and not line.startswith("WARNING: All log messages before absl")]
  assert len(lines) == 1 and says in lines[0] and lines[0].startswith("error: "), run.stderr


def test_view_classifier_and_mil_programs_compile(tmp_path):
  """The other stages' steps, and the exact candidate search at EchoPrime's database size,
  whose FLOPs (a loop over 19 database chunks: XLA's cost analysis counts a loop body once,
  the report n times) must match the count by hand."""
  for config, extra in (("configs/views.py:tiny", ["--config.dtype=bfloat16"]),
                        ("configs/mil.py:tiny", [])):
    out = tmp_path / "out.json"
    run = _aot("--config", config, *extra, "--target", "h200", "--topology", "1x1x2",
               "--json", str(out))
    assert run.returncode == 0, run.stderr[-3000:]
    programs = {p["program"]: p for p in json.loads(out.read_text())["programs"]}
    train = programs["train_step"]
    assert train["state_donated"] and train["headroom"] > 0.9
    assert any(c["kind"] == "all-reduce" for c in train["collectives"])  # data parallel
  search = programs["index_search"]
  assert search["loop_trip_counts"] == [19]  # ceil(1,230,676 / 65,536) chunks
  dots = 2 * 1024 * 1_230_676 * 64  # queries x candidates x tiny embed_dim, multiply-add
  assert dots <= search["flops_per_device"] <= 1.5 * dots  # + the top-k's comparisons


def test_rematerialised_blocks_keep_cudnn_in_both_directions(tmp_path):
  """--config.remat=blocks: the backward pass recomputes each block inside a checkpoint; its
  attention (named ".../checkpoint/attention") must still be found and be cuDNN."""
  out = tmp_path / "remat.json"
  run = _aot("--config", "configs/pretrain.py:tiny", "--config.dtype=bfloat16",
             "--config.remat=blocks", "--target", "h200", "--topology", "1x1x2",
             "--programs", "train_step", "--json", str(out))
  assert run.returncode == 0, run.stderr[-3000:]
  train = json.loads(out.read_text())["programs"][0]
  assert len(train["attention"]) == len(mvit.mvit_tiny().blocks) + \
      bert.bert_tiny().num_hidden_layers
  assert all((a["forward"], a["backward"]) == ("cudnn", "cudnn") for a in train["attention"])
  assert train["state_donated"]


_GELU_MLP_ON_H200 = """
from echoprime_jax.aot import toolchain
toolchain.prepare()
import re
import jax, jax.numpy as jnp
from jax.experimental import topologies
from echoprime_jax.aot import targets
from echoprime_jax.models import layers
topology = topologies.get_topology_desc(
    platform="cuda", target_config=targets.TARGETS["h200"].config_text(), topology="1x1x1")
on_gpu = jax.sharding.SingleDeviceSharding(topology.devices[0])

def loss(w1, w2, b, x):
  return jnp.sum(jnp.square((layers.gelu(x @ w1 + b) @ w2).astype(jnp.float32)))

shapes = [(384, 1536), (1536, 384), (1536,), (25104, 384)]  # MViT-S stage 3, 16 clips
args = [jax.ShapeDtypeStruct(s, jnp.bfloat16, sharding=on_gpu) for s in shapes]
hlo = jax.jit(jax.grad(loss, argnums=(0, 1, 2))).lower(*args).compile().as_text()
entry = hlo[hlo.index("\\nENTRY"):]
print(len(re.findall(r"f32\\[25104,1536\\]", entry)))
"""


def test_gelu_keeps_no_float32_copy_of_its_input_on_gpu():
  """A bf16 MLP's backward pass reads gelu's bf16 input again, never a float32 copy saved by the
  forward pass (XLA shares the two passes' casts unless `layers._gelu_bwd` stops it: at the
  paper setup the copies were 4 GB of HBM traffic and 3.3 GiB of peak memory per device)."""
  run = subprocess.run([sys.executable, "-c", _GELU_MLP_ON_H200], cwd=ROOT, capture_output=True,
                       text=True, timeout=600, env={**os.environ, "PYTHONPATH": ROOT})
  assert run.returncode == 0, run.stderr[-3000:]
  assert run.stdout.split()[-1] == "0"  # no f32[25104,1536] buffer outside the fusions


_LAYER_NORM_ON_H200 = """
from echoprime_jax.aot import toolchain
toolchain.prepare()
import re, sys
import jax, jax.numpy as jnp
from flax import nnx
from jax.experimental import topologies
from echoprime_jax.aot import targets
from echoprime_jax.models import layers
topology = topologies.get_topology_desc(
    platform="cuda", target_config=targets.TARGETS["h200"].config_text(), topology="1x1x1")
on_gpu = jax.sharding.SingleDeviceSharding(topology.devices[0])
make = {"ours": lambda: layers.layer_norm(384, eps=1e-6, dtype=jnp.bfloat16,
                                          param_dtype=jnp.float32, rngs=nnx.Rngs(0)),
        "flax": lambda: nnx.LayerNorm(384, epsilon=1e-6, use_fast_variance=False,
                                      dtype=jnp.bfloat16, param_dtype=jnp.float32,
                                      rngs=nnx.Rngs(0))}[sys.argv[1]]

def loss(scale, bias, w, x):
  norm = make()
  norm.scale[...], norm.bias[...] = scale, bias
  return jnp.sum(jnp.square((norm(x) @ w).astype(jnp.float32)))

shapes = [((384,), jnp.float32)] * 2 + [((384, 1152), jnp.bfloat16), ((25104, 384), jnp.bfloat16)]
args = [jax.ShapeDtypeStruct(s, d, sharding=on_gpu) for s, d in shapes]
hlo = jax.jit(jax.grad(loss, argnums=(0, 1, 2, 3))).lower(*args).compile().as_text()
entry = hlo[hlo.index("\\nENTRY"):]
print(len(re.findall(r"f32\\[25104,384\\]", entry)))
"""


@pytest.mark.parametrize("layer_norm,copies", [("ours", 0), ("flax", 1)])
def test_layer_norm_keeps_no_float32_copy_of_its_input_on_gpu(layer_norm, copies):
  """`layers.LayerNorm`'s backward pass reads its bf16 input again; nnx.LayerNorm's autodiff
  gradient makes XLA keep the forward pass's float32 x - mean (twice the bytes of x, written
  and read back). The flax case shows the count can fail: it finds that buffer."""
  run = subprocess.run([sys.executable, "-c", _LAYER_NORM_ON_H200, layer_norm], cwd=ROOT,
                       capture_output=True, text=True, timeout=600,
                       env={**os.environ, "PYTHONPATH": ROOT})
  assert run.returncode == 0, run.stderr[-3000:]
  assert run.stdout.split()[-1] == str(copies)  # f32[25104,384] buffers outside the fusions


_CONV_ON_H200 = """
from echoprime_jax.aot import toolchain
toolchain.prepare()
import jax, jax.numpy as jnp
from jax.experimental import topologies
from echoprime_jax.aot import report, targets
topology = topologies.get_topology_desc(
    platform="cuda", target_config=targets.TARGETS["h200"].config_text(), topology="1x1x1")
on_gpu = jax.sharding.SingleDeviceSharding(topology.devices[0])

def conv(x, w):
  return jax.lax.conv_general_dilated(x, w, (1, 1), "SAME",
                                      dimension_numbers=("NHWC", "HWIO", "NHWC"))

args = [jax.ShapeDtypeStruct((64, 128, 128, 256), jnp.bfloat16, sharding=on_gpu),
        jax.ShapeDtypeStruct((3, 3, 256, 256), jnp.bfloat16, sharding=on_gpu)]
compiled = jax.jit(conv).lower(*args).compile()
print(report.xla_cost(compiled, compiled.as_text())["bytes_accessed"])
"""


def test_the_roofline_counts_the_bytes_of_cudnn_calls():
  """XLA's cost analysis gives a cuDNN convolution 0 bytes; the report counts its input, kernel
  and output once (not 0, not twice: a later XLA that counts them would fail here)."""
  run = subprocess.run([sys.executable, "-c", _CONV_ON_H200], cwd=ROOT, capture_output=True,
                       text=True, timeout=600, env={**os.environ, "PYTHONPATH": ROOT})
  assert run.returncode == 0, run.stderr[-3000:]
  moved = (2 * 64 * 128 * 128 * 256 + 3 * 3 * 256 * 256) * 2
  assert moved <= float(run.stdout.split()[-1]) <= 1.01 * moved


_POOLING_CONV_GRADIENT_ON_H200 = """
from echoprime_jax.aot import toolchain
toolchain.prepare()
import sys
import jax, jax.numpy as jnp
from jax.experimental import topologies
from echoprime_jax.aot import report, targets
from echoprime_jax.models import cpu_kernels
topology = topologies.get_topology_desc(
    platform="cuda", target_config=targets.TARGETS["h200"].config_text(), topology="1x1x1")
on_gpu = jax.sharding.SingleDeviceSharding(topology.devices[0])
strides, padding = (1, 8, 8), ((1, 1),) * 3  # MViT-S block 0's key / value pooling
conv = {"ours": cpu_kernels.grouped_conv, "autodiff": cpu_kernels._grouped_conv}[sys.argv[1]]

def loss(x, kernel, target):
  return jnp.sum((conv(x, kernel, strides, padding) * target).astype(jnp.float32))

args = [jax.ShapeDtypeStruct(s, jnp.bfloat16, sharding=on_gpu) for s in
        [(8, 8, 56, 56, 96), (3, 3, 3, 1, 96), (8, 8, 7, 7, 96)]]
compiled = jax.jit(jax.grad(loss, argnums=(0, 1))).lower(*args).compile()
print(report.xla_cost(compiled, compiled.as_text())["bytes_accessed"] / (8 * 8 * 56 * 56 * 96 * 2))
"""


@pytest.mark.parametrize("conv,passes", [("ours", (3, 5)), ("autodiff", (6, 12))])
def test_strided_pooling_conv_gradient_reads_no_dilated_copy_on_gpu(conv, passes):
  """A stride-8 depthwise pooling conv's gradient, in HBM passes over an input-sized buffer.
  Ideal: 3 (the forward and the kernel gradient read x, the input gradient writes dx; g and
  y are 64 times smaller). XLA's own input gradient convolves an explicitly dilated and padded
  copy of g, input-sized and mostly zeros, written then read: >= 2 passes more (the autodiff
  case shows the bound can fail). `cpu_kernels.grouped_conv` computes it by stride phase."""
  run = subprocess.run([sys.executable, "-c", _POOLING_CONV_GRADIENT_ON_H200, conv], cwd=ROOT,
                       capture_output=True, text=True, timeout=600,
                       env={**os.environ, "PYTHONPATH": ROOT})
  assert run.returncode == 0, run.stderr[-3000:]
  low, high = passes
  assert low <= float(run.stdout.split()[-1]) <= high


_TOKENS_LINEAR_ON_H200 = """
from echoprime_jax.aot import toolchain
toolchain.prepare()
import re, sys
import jax, jax.numpy as jnp
from flax import nnx
from jax.experimental import topologies
from echoprime_jax.aot import targets
from echoprime_jax.models import layers
topology = topologies.get_topology_desc(
    platform="cuda", target_config=targets.TARGETS["h200"].config_text(), topology="1x1x1")
on_gpu = jax.sharding.SingleDeviceSharding(topology.devices[0])
layer = nnx.Linear(96, 384, dtype=jnp.bfloat16, param_dtype=jnp.float32, rngs=nnx.Rngs(0))
graphdef, _ = nnx.split(layer)
apply = {  # -> the outputs of the class token and of the grid tokens
    "apart": lambda m, cls, grid: [o[0] for o in layers.linear_each(m, [grid, cls])],
    "two_calls": lambda m, cls, grid: [m(grid), m(cls)],
    "joined": lambda m, cls, grid: [m(jnp.concatenate([cls, grid], axis=1))],
}[sys.argv[1]]

def loss(state, cls, grid):
  outs = apply(nnx.merge(graphdef, state), cls, grid)
  return sum(jnp.sum(jnp.square(o.astype(jnp.float32))) for o in outs)

state = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=on_gpu),
                     nnx.state(layer))
cls, grid = [jax.ShapeDtypeStruct(s, jnp.bfloat16, sharding=on_gpu)
             for s in [(16, 1, 96), (16, 25088, 96)]]  # MViT-S block 0, 16 clips
hlo = jax.jit(jax.grad(loss, argnums=(0, 1, 2))).lower(state, cls, grid).compile().as_text()
entry = hlo[hlo.index("\\nENTRY"):]
joined = len(re.findall(r"\\[(?:401424|16,25089),", entry))  # a buffer of all 16 x 25089 tokens
pads = len(re.findall(r"= bf16\\[\\d+,\\d+\\]\\S* fusion\\([^\\n]*calls=%fused_pad", entry))
print(joined, pads)
"""


@pytest.mark.parametrize("form,joined,pads", [("apart", 0, 0), ("two_calls", 1, 0),
                                              ("joined", 1, 1)])
def test_class_token_and_grid_gemms_stay_apart_on_gpu(form, joined, pads):
  """MViT's GPU program sends the class token and the token grid through each linear layer
  apart (`mvit.Tokens`, `layers.linear_each`): no buffer of all 16 x 25089 tokens, no split-K
  pad of the weight gradient's operands. Two plain calls of the layer get merged by XLA into
  one GEMM over a concatenated copy; one GEMM over the joined tokens gets its operands padded.
  (joined / pads: 1 = at least one.)"""
  run = subprocess.run([sys.executable, "-c", _TOKENS_LINEAR_ON_H200, form], cwd=ROOT,
                       capture_output=True, text=True, timeout=600,
                       env={**os.environ, "PYTHONPATH": ROOT})
  assert run.returncode == 0, run.stderr[-3000:]
  found = [int(v) for v in run.stdout.split()[-2:]]
  assert [min(v, 1) for v in found] == [joined, pads], found
