"""The attention kernel choice and cuDNN's padded inputs (models/attention.py).

cuDNN itself needs a GPU; its *inputs* do not: kernel="xla_padded" runs exactly the padded
program (odd token counts made even, the extra key masked by length, head dims padded to one
multiple-of-8 width) through XLA, and must equal unpadded attention to float32 rounding, values
and gradients. The compiled-for-H200 check that cuDNN takes every layer is tests/aot/.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from echoprime_jax.models import attention, compile_target


def _reference(q, k, v, scale, kv_lengths=None):
  logits = jnp.einsum("btnh,bsnh->bnts", q, k) * scale
  if kv_lengths is not None:
    valid = jnp.arange(k.shape[1])[None, :] < kv_lengths[:, None]
    logits = jnp.where(valid[:, None, None, :], logits, -jnp.inf)
  return jnp.einsum("bnts,bsnh->btnh", jax.nn.softmax(logits, -1), v)


# MViT's shapes in miniature: odd token counts (the class token), a QK width of 96 + rel-pos
# columns (here 21 + 3) wider than V's, not a multiple of 8
@pytest.mark.parametrize("t,s,hq,hv", [(25, 9, 24, 16), (17, 17, 13, 13), (8, 6, 16, 16)])
def test_padded_inputs_give_the_same_attention_and_gradients(t, s, hq, hv):
  rng = np.random.default_rng(t * 100 + s)
  q, k = (jnp.asarray(rng.normal(size=(2, n, 3, hq)), jnp.float32) for n in (t, s))
  v = jnp.asarray(rng.normal(size=(2, s, 3, hv)), jnp.float32)
  w = jnp.asarray(rng.normal(size=(2, t, 3, hv)), jnp.float32)  # a cotangent: all outputs count

  def loss(fn, q, k, v):
    return jnp.sum(fn(q, k, v) * w)

  padded = lambda q, k, v: attention.fused(q, k, v, scale=0.3, kernel="xla_padded")
  plain = lambda q, k, v: _reference(q, k, v, 0.3)
  out = jax.jit(padded)(q, k, v)
  assert out.shape == (2, t, 3, hv)
  np.testing.assert_allclose(out, jax.jit(plain)(q, k, v), atol=2e-6, rtol=0)
  grads = jax.jit(jax.grad(lambda *a: loss(padded, *a), argnums=(0, 1, 2)))(q, k, v)
  ref = jax.jit(jax.grad(lambda *a: loss(plain, *a), argnums=(0, 1, 2)))(q, k, v)
  for g, r in zip(grads, ref):
    assert g.shape == r.shape
    np.testing.assert_allclose(g, r, atol=1e-5, rtol=0)


def test_key_lengths_mask_right_padding():
  """BERT's mask as lengths: a report of 5 of 9 tokens attends to its 5 only."""
  rng = np.random.default_rng(3)
  q, k, v = (jnp.asarray(rng.normal(size=(2, 9, 2, 8)), jnp.float32) for _ in range(3))
  lengths = jnp.asarray([9, 5], jnp.int32)
  out = attention.fused(q, k, v, scale=0.5, kv_lengths=lengths, kernel="xla_padded")
  np.testing.assert_allclose(out, _reference(q, k, v, 0.5, lengths), atol=2e-6, rtol=0)
  # the padded keys change nothing: other values there, same output
  k2 = k.at[1, 5:].set(7.0)
  v2 = v.at[1, 5:].set(-3.0)
  out2 = attention.fused(q, k2, v2, scale=0.5, kv_lengths=lengths, kernel="xla_padded")
  np.testing.assert_array_equal(out2[1], out[1])


def test_kernel_follows_the_compile_target_and_dtype():
  assert attention.kernel("auto", jnp.bfloat16, 96) == "xla"  # this host is a CPU
  with compile_target.compiling_for("cuda"):
    assert compile_target.platform() == "gpu"
    assert attention.kernel("auto", jnp.bfloat16, 118) == "cudnn"
    assert attention.kernel("auto", jnp.float16, 64) == "cudnn"
    assert attention.kernel("auto", jnp.float32, 64) == "xla"  # cuDNN flash: 16-bit only
    # a CPU host's jax answers "not Hopper": heads over 128 stay on XLA unless the target says
    # otherwise (echoprime_jax.aot does)
    assert attention.kernel("auto", jnp.bfloat16, 132) == "xla"
  assert compile_target.platform() == "cpu"  # the setting ends with its block
  assert attention.kernel("xla", jnp.bfloat16, 64) == "xla"
  assert attention.kernel("fused", jnp.float32, 64) == "cudnn"  # the old name
  with pytest.raises(ValueError, match="attention must be one of"):
    attention.kernel("flash", jnp.bfloat16, 64)
