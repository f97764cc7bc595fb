"""The hand-lowered convolutions equal XLA's own convolution: values and both gradients."""

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
