"""The hand-lowered layers equal their reference maths: convolutions (values and both
gradients), erf / GELU, dropout statistics, the cotangent barrier."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from echoprime_jax.models import layers


def _lax_conv(x, kernel, strides, padding, groups=1):
  nd = x.ndim - 2
  spec = {2: ("NHWC", "HWIO", "NHWC"), 3: ("NDHWC", "DHWIO", "NDHWC")}[nd]
  return jax.lax.conv_general_dilated(x, kernel, strides, padding, dimension_numbers=spec,
                                      feature_group_count=groups,
                                      precision=jax.lax.Precision.HIGHEST)


def _random(shape, seed):
  return jnp.asarray(np.random.default_rng(seed).standard_normal(shape, dtype=np.float32))


def test_conv3d_by_frames_value_and_gradients_match_xla_conv():
  # MViT's stem shape at a small size; odd sizes so the last stride window is partial.
  x, kernel = _random((2, 7, 21, 19, 3), 0), _random((3, 7, 7, 3, 8), 1)
  strides, padding = (2, 4, 4), ((1, 1), (3, 3), (3, 3))
  target = _random(_lax_conv(x, kernel, strides, padding).shape, 2)

  def loss(conv, x, kernel):
    return jnp.sum(conv(x, kernel) * target)

  ours = lambda x, k: layers.conv3d_by_frames(x, k, strides, padding)
  ref = lambda x, k: _lax_conv(x, k, strides, padding)
  np.testing.assert_allclose(jax.jit(ours)(x, kernel), ref(x, kernel), atol=2e-5)
  g_ours = jax.jit(jax.grad(lambda x, k: loss(ours, x, k), argnums=(0, 1)))(x, kernel)
  g_ref = jax.grad(lambda x, k: loss(ref, x, k), argnums=(0, 1))(x, kernel)
  for a, b in zip(g_ours, g_ref):
    assert float(jnp.abs(b).max()) > 1.0  # a real gradient, not zeros on both sides
    np.testing.assert_allclose(a, b, atol=1e-4 * float(jnp.abs(b).max()))


def test_depthwise_conv_matches_grouped_xla_conv():
  x, kernel = _random((2, 5, 9, 8, 6), 3), _random((3, 3, 3, 1, 6), 4)
  strides, padding = (1, 2, 2), ((1, 1), (1, 1), (1, 1))
  ours = jax.jit(lambda x, k: layers.depthwise_conv(x, k, strides, padding))(x, kernel)
  np.testing.assert_allclose(ours, _lax_conv(x, kernel, strides, padding, groups=6), atol=2e-5)


@pytest.mark.parametrize("shape, ksize, strides, padding", [
    ((2, 5, 9, 8, 6), (3, 3, 3), (1, 1, 1), ((1, 1),) * 3),  # MViT q pooling
    ((2, 5, 9, 8, 6), (3, 3, 3), (1, 2, 2), ((1, 1),) * 3),
    ((1, 4, 17, 15, 3), (3, 3, 3), (1, 4, 4), ((1, 1),) * 3),  # stride > kernel: empty phases
    ((1, 6, 17, 19, 2), (3, 3, 3), (2, 8, 8), ((1, 1),) * 3),  # input past the last window
    ((2, 11, 9, 4), (7, 7), (1, 1), ((3, 3),) * 2),  # ConvNeXt's 7x7
    ((2, 10, 11, 4), (3, 5), (2, 3), ((1, 1), (2, 2))),
])
def test_depthwise_conv_gradients_match_grouped_xla_conv(shape, ksize, strides, padding):
  # The hand-written VJP (per stride phase) against autodiff of XLA's grouped convolution.
  x, kernel = _random(shape, 5), _random((*ksize, 1, shape[-1]), 6)
  ref = lambda x, k: _lax_conv(x, k, strides, padding, groups=shape[-1])
  target = _random(ref(x, kernel).shape, 7)
  g_ours = jax.jit(jax.grad(lambda x, k: jnp.sum(
      layers.depthwise_conv(x, k, strides, padding) * target), argnums=(0, 1)))(x, kernel)
  g_ref = jax.grad(lambda x, k: jnp.sum(ref(x, k) * target), argnums=(0, 1))(x, kernel)
  for a, b in zip(g_ours, g_ref):
    assert float(jnp.abs(b).max()) > 1.0
    np.testing.assert_allclose(a, b, atol=1e-5 * float(jnp.abs(b).max()))


def test_patch_conv_matches_a_stride_equal_kernel_conv():
  conv = layers.PatchConv(3, 8, 4, dtype=jnp.float32, param_dtype=jnp.float32,
                          rngs=nnx.Rngs(0))
  x = _random((2, 18, 17, 3), 5)  # 18x17: rows/columns beyond whole patches are dropped
  ref = _lax_conv(x, conv.kernel[...], (4, 4), "VALID") + conv.bias[...]
  np.testing.assert_allclose(conv(x), ref, atol=2e-5)


def test_erf_matches_the_exact_function():
  x = np.linspace(-6, 6, 200_001, dtype=np.float32)
  exact = np.array([math.erf(v) for v in x.astype(np.float64)])
  err = np.abs(np.asarray(jax.jit(layers.erf)(x), np.float64) - exact)
  assert err.max() < 4e-7  # jax.lax.erf: 3.1e-7 on the same grid
  assert err[np.abs(x) > 4].max() < 1e-7  # saturates to +-1 exactly where float32 does


def test_gelu_value_and_gradient_match_the_erf_form():
  x = jnp.asarray(np.linspace(-8, 8, 4001, dtype=np.float32))
  exact = lambda v: jax.nn.gelu(v, approximate=False)  # JAX's own erfc-based form
  np.testing.assert_allclose(jax.jit(layers.gelu)(x), exact(x), atol=1e-6)
  grad = jax.jit(jax.vmap(jax.grad(layers.gelu)))(x)
  np.testing.assert_allclose(grad, jax.vmap(jax.grad(exact))(x), atol=1e-6)
  assert float(grad[0]) == pytest.approx(0.0, abs=1e-6) and float(grad[-1]) == pytest.approx(1.0)
  half = layers.gelu(x.astype(jnp.bfloat16))
  assert half.dtype == jnp.bfloat16
  np.testing.assert_allclose(np.asarray(half, np.float32), exact(x), atol=0.07, rtol=0.01)


@pytest.mark.parametrize("rate", [0.1, 0.5])
def test_dropout_drops_at_the_rate_and_keeps_the_mean(rate):
  drop = layers.Dropout(rate, rngs=nnx.Rngs(dropout=0))
  x = jnp.ones((64, 129, 127))  # odd last axis: the 16-bit draws are split from 32-bit words
  y = drop(x)
  kept = np.asarray(y) != 0
  keep_prob = 1 - round(rate * 65536) / 65536
  n = kept.size
  assert abs(kept.mean() - keep_prob) < 5 * math.sqrt(keep_prob * (1 - keep_prob) / n)
  np.testing.assert_allclose(np.asarray(y)[kept], 1 / keep_prob, rtol=1e-6)  # exact rescale
  assert abs(float(y.mean()) - 1.0) < 5 * math.sqrt((1 - keep_prob) / keep_prob / n)
  assert not np.array_equal(kept, np.asarray(drop(x)) != 0)  # a fresh mask per call
  drop.eval()
  assert drop(x) is x


def test_dropout_broadcast_dims_share_one_decision():
  drop = layers.drop_path(0.5, 3, nnx.Rngs(dropout=1))  # stochastic depth: one draw per sample
  y = np.asarray(drop(jnp.ones((256, 5, 3))))
  per_sample = y.reshape(256, -1)
  assert np.all(per_sample == per_sample[:, :1])
  assert 0.35 < (per_sample[:, 0] != 0).mean() < 0.65


def test_materialize_cotangent_is_an_identity_whose_gradient_survives_compilation():
  f = lambda x: jnp.sum(jnp.sin(layers.materialize_cotangent(x * 2.0)) ** 2)
  ref = lambda x: jnp.sum(jnp.sin(x * 2.0) ** 2)
  x = _random((33, 17), 3)
  np.testing.assert_array_equal(jax.jit(f)(x), jax.jit(ref)(x))
  np.testing.assert_allclose(jax.jit(jax.grad(f))(x), jax.jit(jax.grad(ref))(x), rtol=1e-6)
  # the barrier is a conditional in the optimised program (an optimization_barrier would be
  # expanded away before fusion, see its docstring)
  hlo = jax.jit(jax.grad(f)).lower(x).compile().as_text()
  assert "conditional(" in hlo
