"""Reading a compiled GPU program (aot/hlo_report.py, roofline.py, targets.py) on HLO lines in
the optimized-HLO format XLA prints (shapes and names as in the paper setup's program)."""

import pytest

from echoprime_jax.aot import hlo_report, roofline, targets

HLO = """HloModule jit_train_step, is_scheduled=true, input_output_alias={ {0}: (0, {}, may-alias), {1}: (1, {}, may-alias), {2}: (3, {}, may-alias) }, entry_computation_layout={(f32[8]{0})->f32[8]{0}}, num_partitions=2

%gemm_fusion_dot.1_computation (p0: bf16[16,393,96], p1: bf16[16,393,96]) -> bf16[16,393,393] {
  %p0 = bf16[16,393,96]{2,1,0} parameter(0)
  %p1 = bf16[16,393,96]{2,1,0} parameter(1)
  ROOT %dot.1 = bf16[16,393,393]{2,1,0} dot(%p0, %p1), lhs_batch_dims={0}, lhs_contracting_dims={2}, rhs_batch_dims={0}, rhs_contracting_dims={2}, metadata={op_name="jit(train_step)/jvp(bert_layer3)/attention/dot_general" stack_frame_id=3}
}

ENTRY %main (x: bf16[16,25090,1,120], y: bf16[16,394,1,120], z: bf16[16,394,1,120]) -> f32[8] {
  %x = bf16[16,25090,1,120]{3,2,1,0} parameter(0)
  %y = bf16[16,394,1,120]{3,2,1,0} parameter(1)
  %z = bf16[16,394,1,120]{3,2,1,0} parameter(2)
  %fmha.1 = (bf16[16,1,25090,120]{3,1,2,0}, f32[16,1,25090]{2,1,0}, u8[0]{0}) custom-call(%x, %y, %z), custom_call_target="__cudnn$fmhaSoftmax", operand_layout_constraints={bf16[16,25090,1,120]{3,2,1,0}, bf16[16,394,1,120]{3,2,1,0}, bf16[16,394,1,120]{3,2,1,0}}, api_version=API_VERSION_STATUS_RETURNING, metadata={op_name="jit(train_step)/jvp(mvit_block0)/attention/custom_partitioning"}, backend_config={"operation_queue_id": "0", "cudnn_fmha_backend_config": {"intermediate_tensor_shape": {"element_type": "BF16", "dimensions": ["16", "1", "25090", "394"]}, "is_flash_attention": true}}
  %fmha.2 = (bf16[16,25090,1,120]{3,2,1,0}, bf16[16,394,1,120]{3,2,1,0}, bf16[16,394,1,120]{3,2,1,0}, u8[0]{0}) custom-call(%x, %y, %z), custom_call_target="__cudnn$fmhaSoftmaxBackward", operand_layout_constraints={bf16[16,25090,1,120]{3,2,1,0}, bf16[16,394,1,120]{3,2,1,0}, bf16[16,394,1,120]{3,2,1,0}}, metadata={op_name="jit(train_step)/transpose(jvp(mvit_block0))/attention/custom_partitioning"}, backend_config={"cudnn_fmha_backend_config": {"intermediate_tensor_shape": {"dimensions": ["16", "1", "25090", "394"]}}}
  %k = bf16[3,7,7,3,96]{4,3,2,1,0} parameter(3)
  %conv.1 = (bf16[128,56,56,96]{3,2,1,0}, u8[0]{0}) custom-call(%v, %k2), window={size=7x7 stride=4x4 pad=3_3x3_3}, dim_labels=b01f_01io->b01f, custom_call_target="__cudnn$convForward", metadata={op_name="jit(train_step)/jvp()/conv_general_dilated"}
  %v = bf16[128,224,224,3]{3,2,1,0} parameter(4)
  %k2 = bf16[7,7,3,96]{3,2,1,0} parameter(5)
  %a1 = bf16[64,128]{1,0} parameter(6)
  %b1 = bf16[128,256]{1,0} parameter(7)
  %gemm.1 = (bf16[64,256]{1,0}, s8[4194304]{0}) custom-call(%a1, %b1), custom_call_target="__cublas$lt$matmul", backend_config={"gemm_backend_config":{"dot_dimension_numbers":{"lhs_contracting_dimensions":["1"],"rhs_contracting_dimensions":["0"]}}}
  %all-reduce-start.1 = bf16[137438953]{0} all-reduce-start(%w), channel_id=1, replica_groups={{0,1}}, to_apply=%add
  %all-reduce-done.1 = bf16[137438953]{0} all-reduce-done(%all-reduce-start.1)
  %all-reduce.2 = f32[2]{0} all-reduce(%u), channel_id=2, replica_groups={{0,1}}, to_apply=%add
  %all-gather-start = (f32[4,8]{1,0}, f32[8,8]{1,0}) all-gather-start(%g), dimensions={0}
  ROOT %r = f32[8]{0} add(%a, %b)
}
"""


def test_attention_kernel_per_layer_and_direction():
  rows = hlo_report.attention_kernels(HLO)
  assert rows == [{"layer": "mvit_block0", "forward": "cudnn", "backward": "cudnn"},
                  {"layer": "bert_layer3", "forward": "xla", "backward": ""}]


def test_collectives_counted_once_with_their_buffer_sizes():
  rows = {(r["kind"], r["dtype"]): r for r in hlo_report.collectives(HLO)}
  assert rows[("all-reduce", "bf16")] == {"kind": "all-reduce", "dtype": "bf16", "count": 1,
                                          "bytes": 2 * 137438953}  # -done not counted again
  assert rows[("all-reduce", "f32")]["bytes"] == 8
  assert rows[("all-gather", "f32")]["bytes"] == 8 * 8 * 4  # the gathered result
  assert len(rows) == 3


def test_cudnn_flops_from_shapes():
  flops = hlo_report.custom_call_flops(HLO)
  pairs = 16 * 1 * 25090 * 394
  assert flops["attention"] == 2 * pairs * (120 + 120) + 2 * pairs * (3 * 120 + 2 * 120)
  # 2 * output elements * 7*7*3 taps per output feature
  assert flops["conv"] == 2 * 128 * 56 * 56 * 96 * (7 * 7 * 3)


def test_cublas_gemm_flops_and_every_library_calls_bytes():
  """XLA's cost analysis counts custom calls as 0 bytes: their operands and results (not the
  scratch workspace) are what they move through HBM."""
  assert hlo_report.custom_call_flops(HLO)["gemm"] == 2 * 64 * 256 * 128
  q, kv = 16 * 25090 * 120 * 2, 16 * 394 * 120 * 2
  forward = (q + 2 * kv) + (q + 16 * 25090 * 4)  # Q, K, V in; O and the f32 softmax stats out
  backward = (q + 2 * kv) * 2
  conv = 128 * 224 * 224 * 3 * 2 + 7 * 7 * 3 * 96 * 2 + 128 * 56 * 56 * 96 * 2
  gemm = (64 * 128 + 128 * 256 + 64 * 256) * 2
  assert hlo_report.custom_call_bytes(HLO) == forward + backward + conv + gemm


def test_aliased_buffers_counted_from_the_module_header():
  assert hlo_report.aliased_parameters(HLO) == 3


def test_roofline_bound_and_mfu():
  h200 = targets.TARGETS["h200"]
  compute = roofline.bound(989e12 * 0.02, 4.8e12 * 0.01, h200)  # 20 ms of FLOPs, 10 of bytes
  assert compute["bound_by"] == "compute" and compute["mfu_bound"] == pytest.approx(1.0)
  memory = roofline.bound(989e12 * 0.01, 4.8e12 * 0.04, h200)
  assert memory["bound_by"] == "memory"
  assert memory["step_time_bound_s"] == pytest.approx(0.04)
  assert memory["mfu_bound"] == pytest.approx(0.25)


def test_target_text_and_topology():
  text = targets.TARGETS["h100"].config_text()
  assert "device_memory_size: 84942979072" in text and "major: 9" in text
  assert targets.parse_topology("1x2x8") == (1, 2, 8)
  assert targets.peak_flops(targets.TARGETS["h200"], "fp32") == 67e12
  with pytest.raises(ValueError, match="PARTITIONSxHOSTSxDEVICES"):
    targets.parse_topology("2x8")


LOOP = """HloModule jit_search

%body.1 (arg: (s32[], f32[4,8])) -> (s32[], f32[4,8]) {
  %arg = (s32[], f32[4,8]{1,0}) parameter(0)
  ROOT %t = (s32[], f32[4,8]{1,0}) tuple(%a, %b)
}

%cond.1 (arg.1: (s32[], f32[4,8])) -> pred[] {
  ROOT %p = pred[] constant(true)
}

ENTRY %main (x: f32[4,8]) -> f32[4,8] {
  %w = (s32[], f32[4,8]{1,0}) while(%init), condition=%cond.1, body=%body.1, metadata={op_name="jit(f)/while" stack_frame_id=4}, backend_config={"known_trip_count":{"n":"19"}}
  ROOT %r = f32[4,8]{1,0} get-tuple-element(%w), index=1
}
"""


def test_loops_and_their_bodies_as_modules():
  assert hlo_report.loops(LOOP) == [("body.1", 19)]
  text = hlo_report.body_module(LOOP, "body.1")
  assert "ENTRY %body.1 (" in text and "%cond.1 (" in text and "%main" not in text
  assert "stack_frame_id" not in text
