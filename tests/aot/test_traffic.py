"""Where a compiled program's traffic goes (aot/traffic.py), on hand-written optimized-HLO lines:
each instruction charged its result and operands, grouped by pass, kind and layer."""

from echoprime_jax.aot import traffic

HLO = """HloModule jit_train_step, is_scheduled=true

%fused_add.3 (p0: bf16[100,96], p1: bf16[100,96]) -> bf16[100,96] {
  %p0 = bf16[100,96]{1,0} parameter(0)
  %p1 = bf16[100,96]{1,0} parameter(1)
  ROOT %add.1 = bf16[100,96]{1,0} add(%p0, %p1)
}

ENTRY %main (x: bf16[100,96], g: bf16[100,96], w: f32[96,96], buf: f32[1000]) -> f32[96,96] {
  %x = bf16[100,96]{1,0} parameter(0)
  %g = bf16[100,96]{1,0} parameter(1)
  %w = f32[96,96]{1,0} parameter(2)
  %buf = f32[1000]{0} parameter(3)
  %loop_add_fusion.3 = bf16[100,96]{1,0} fusion(%x, %g), kind=kLoop, calls=%fused_add.3, metadata={op_name="jit(train_step)/jvp(mvit_block1)/add"}
  %loop_add_fusion.4 = bf16[100,96]{1,0} fusion(%loop_add_fusion.3, %g), kind=kLoop, calls=%fused_add.4, metadata={op_name="jit(train_step)/transpose(jvp(mvit_block1))/add_any"}
  %gemm_fusion_dot.7 = bf16[96,96]{1,0} fusion(%x, %g), kind=kCustom, calls=%gemm_fusion_dot.7_computation, metadata={op_name="jit(train_step)/transpose(jvp(bert_layer2))/dot_general"}
  %loop_pad_fusion = bf16[512,96]{1,0} fusion(%x), kind=kLoop, calls=%fused_pad
  %conv = (bf16[100,96]{1,0}, u8[0]{0}) custom-call(%x, %g), custom_call_target="__cudnn$convForward", metadata={op_name="jit(train_step)/jvp(mvit_block0)/conv_general_dilated"}
  %wrapped_slice.2 = f32[10]{0} fusion(%buf), kind=kLoop, calls=%wrapped_slice_computation.2
  %gte = bf16[100,96]{1,0} get-tuple-element(%conv), index=0
  ROOT %update = f32[96,96]{1,0} fusion(%w, %gemm_fusion_dot.7), kind=kLoop, calls=%fused_multiply.9, metadata={op_name="jit(train_step)/mul"}
}
"""

ACT = 100 * 96 * 2  # one bf16[100,96]: 19,200 bytes


def test_each_instruction_is_charged_its_result_and_operands():
  rows = {r["name"]: r for r in traffic.charges(HLO)}
  assert set(rows) == {"loop_add_fusion.3", "loop_add_fusion.4", "gemm_fusion_dot.7",
                       "loop_pad_fusion", "conv", "wrapped_slice.2", "update"}  # no bookkeeping
  assert rows["loop_add_fusion.3"] == {"name": "loop_add_fusion.3", "kind": "fused_add",
                                       "phase": "forward", "layer": "mvit_block1",
                                       "bytes": 3 * ACT}
  assert rows["loop_add_fusion.4"]["phase"] == "backward"
  assert rows["gemm_fusion_dot.7"]["kind"] == "gemm_fusion_dot"
  assert rows["gemm_fusion_dot.7"]["bytes"] == 96 * 96 * 2 + 2 * ACT
  assert rows["gemm_fusion_dot.7"]["layer"] == "bert_layer2"
  assert rows["loop_pad_fusion"]["phase"] == "unnamed"  # XLA's own: no op_name
  assert rows["loop_pad_fusion"]["bytes"] == 512 * 96 * 2 + ACT
  assert rows["conv"]["kind"] == "__cudnn$convForward" and rows["conv"]["bytes"] == 3 * ACT
  assert rows["wrapped_slice.2"]["bytes"] == 2 * 10 * 4  # its result, not the 4,000-byte buffer
  assert rows["update"]["phase"] == "update" and rows["update"]["layer"] == "-"
  assert rows["update"]["bytes"] == 3 * 96 * 96 * 4 - 96 * 96 * 2


def test_breakdown_groups_and_the_elementwise_share():
  b = traffic.breakdown(HLO)
  rows = traffic.charges(HLO)
  assert b["total"] == sum(r["bytes"] for r in rows) == sum(b["by_phase"].values())
  assert b["by_phase"]["forward"] == 3 * ACT + 3 * ACT  # the add and the convolution
  # elementwise: the two adds, the slice and the update; not the GEMM, the pad or cuDNN
  assert b["elementwise"] == 6 * ACT + 80 + (3 * 96 * 96 * 4 - 96 * 96 * 2)
  assert b["elementwise_by_layer"]["mvit_block1"] == 6 * ACT
  kinds = list(b["by_kind"].items())  # the largest first: the pad's 117,504 bytes, then the adds
  assert kinds[:2] == [("fused_pad", 512 * 96 * 2 + ACT), ("fused_add", 6 * ACT)]
