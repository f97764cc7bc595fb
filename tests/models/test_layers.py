"""The hand-lowered layers equal their reference maths: convolutions (values and both
gradients), erf / GELU, LayerNorm, dropout statistics, the cotangent barrier."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from echoprime_jax.models import cpu_kernels, layers


def _lax_conv(x, kernel, strides, padding, groups=1):
  nd = x.ndim - 2
  spec = {2: ("NHWC", "HWIO", "NHWC"), 3: ("NDHWC", "DHWIO", "NDHWC")}[nd]
  return jax.lax.conv_general_dilated(x, kernel, strides, padding, dimension_numbers=spec,
                                      feature_group_count=groups,
                                      precision=jax.lax.Precision.HIGHEST)


def _random(shape, seed):
  return jnp.asarray(np.random.default_rng(seed).standard_normal(shape, dtype=np.float32))


def _fp32_tolerance(conv, x, kernel, terms: int) -> np.ndarray:
  """Elementwise bound on |ours - reference| for two fp32 evaluations of the same K-term dot
  products in different orders: each is within ~lambda * sqrt(K) * u * sum|x_i k_i| of the
  exact value (probabilistic rounding-error bound, Higham & Mary 2019; lambda = 4 holds with
  probability 1 - 2e^-8 per element), u = 2^-24. sum|x_i k_i| is the same convolution of the
  absolute values. Code generation (ISA, fusion order) moves results within this bound; a
  wrong window, stride or padding moves them by O(|y|)."""
  magnitude = np.asarray(conv(jnp.abs(x), jnp.abs(kernel)), np.float64)
  return 2 * 4 * math.sqrt(terms) * 2.0 ** -24 * magnitude + 1e-30


def test_conv3d_by_frames_value_and_gradients_match_xla_conv():
  # MViT's stem shape at a small size; odd sizes so the last stride window is partial.
  x, kernel = _random((2, 7, 21, 19, 3), 0), _random((3, 7, 7, 3, 8), 1)
  strides, padding = (2, 4, 4), ((1, 1), (3, 3), (3, 3))
  target = _random(_lax_conv(x, kernel, strides, padding).shape, 2)

  def loss(conv, x, kernel):
    return jnp.sum(conv(x, kernel) * target)

  ours = lambda x, k: cpu_kernels.conv3d_by_frames(x, k, strides, padding)
  ref = lambda x, k: _lax_conv(x, k, strides, padding)
  bound = _fp32_tolerance(ref, x, kernel, terms=3 * 7 * 7 * 3)
  diff = np.abs(np.asarray(jax.jit(ours)(x, kernel), np.float64) - np.asarray(ref(x, kernel)))
  assert (diff <= bound).all(), float((diff / bound).max())
  g_ours = jax.jit(jax.grad(lambda x, k: loss(ours, x, k), argnums=(0, 1)))(x, kernel)
  g_ref = jax.grad(lambda x, k: loss(ref, x, k), argnums=(0, 1))(x, kernel)
  for a, b in zip(g_ours, g_ref):
    assert float(jnp.abs(b).max()) > 1.0  # a real gradient, not zeros on both sides
    np.testing.assert_allclose(a, b, atol=1e-4 * float(jnp.abs(b).max()))


def test_depthwise_conv_matches_grouped_xla_conv():
  x, kernel = _random((2, 5, 9, 8, 6), 3), _random((3, 3, 3, 1, 6), 4)
  strides, padding = (1, 2, 2), ((1, 1), (1, 1), (1, 1))
  ours = jax.jit(lambda x, k: cpu_kernels.depthwise_conv(x, k, strides, padding))(x, kernel)
  ref = lambda x, k: _lax_conv(x, k, strides, padding, groups=6)
  diff = np.abs(np.asarray(ours, np.float64) - np.asarray(ref(x, kernel)))
  assert (diff <= _fp32_tolerance(ref, x, kernel, terms=3 * 3 * 3)).all()


@pytest.mark.parametrize("conv", ["depthwise_conv", "grouped_conv"])
@pytest.mark.parametrize("shape, ksize, strides, padding", [
    ((2, 5, 9, 8, 6), (3, 3, 3), (1, 1, 1), ((1, 1),) * 3),  # MViT q pooling
    ((2, 5, 9, 8, 6), (3, 3, 3), (1, 2, 2), ((1, 1),) * 3),
    ((1, 4, 17, 15, 3), (3, 3, 3), (1, 4, 4), ((1, 1),) * 3),  # stride > kernel: empty phases
    ((1, 6, 17, 19, 2), (3, 3, 3), (2, 8, 8), ((1, 1),) * 3),  # input past the last window
    ((2, 11, 9, 4), (7, 7), (1, 1), ((3, 3),) * 2),  # ConvNeXt's 7x7
    ((2, 10, 11, 4), (3, 5), (2, 3), ((1, 1), (2, 2))),
])
def test_depthwise_gradients_match_autodiff_of_xla_conv(conv, shape, ksize, strides, padding):
  # The hand-written VJPs against autodiff of XLA's grouped convolution: the CPU form's (every
  # gradient by taps and stride phases) and the GPU form's (XLA's convolution forward and
  # kernel gradient, the phases' input gradient).
  x, kernel = _random(shape, 5), _random((*ksize, 1, shape[-1]), 6)
  ref = lambda x, k: _lax_conv(x, k, strides, padding, groups=shape[-1])
  target = _random(ref(x, kernel).shape, 7)
  ours = getattr(cpu_kernels, conv)
  g_ours = jax.jit(jax.grad(lambda x, k: jnp.sum(ours(x, k, strides, padding) * target),
                            argnums=(0, 1)))(x, kernel)
  g_ref = jax.grad(lambda x, k: jnp.sum(ref(x, k) * target), argnums=(0, 1))(x, kernel)
  for a, b in zip(g_ours, g_ref):
    assert float(jnp.abs(b).max()) > 1.0
    np.testing.assert_allclose(a, b, atol=1e-5 * float(jnp.abs(b).max()))


def test_depthwise_module_takes_the_grouped_conv_in_gpu_programs():
  """GPU programs use XLA's grouped convolution (cuDNN there); same values as the CPU taps."""
  from echoprime_jax.models import compile_target
  conv = cpu_kernels.DepthwiseConv(6, (3, 3, 3), (1, 2, 2), (1, 1, 1), use_bias=False,
                                   dtype=jnp.float32, param_dtype=jnp.float32, rngs=nnx.Rngs(0))
  x = _random((2, 5, 9, 8, 6), 8)
  # fresh lambdas: jax caches a function's trace by shapes, not by the compile target
  on_cpu = jax.make_jaxpr(lambda x: conv(x))(x)
  with compile_target.compiling_for("gpu"):
    on_gpu = jax.make_jaxpr(lambda x: conv(x))(x)
    y_gpu = jax.jit(lambda x: conv(x))(x)
  assert "conv_general_dilated" in str(on_gpu) and "conv_general_dilated" not in str(on_cpu)
  np.testing.assert_allclose(y_gpu, jax.jit(lambda x: conv(x))(x), atol=1e-5)


@pytest.mark.parametrize("target", ["cpu", "gpu"])
def test_depthwise_module_repeats_its_kernel_over_channel_groups(target):
  """repeats=n (MViT's heads sharing one pooling conv) is the n per-group convolutions side by
  side, values and gradients (kernel gradient: the sum over the groups), on both code paths."""
  from echoprime_jax.models import compile_target
  conv = cpu_kernels.DepthwiseConv(4, (3, 3, 3), (1, 2, 2), (1, 1, 1), use_bias=True,
                                   dtype=jnp.float32, param_dtype=jnp.float32, rngs=nnx.Rngs(2))
  conv.bias[...] = _random((4,), 11)
  x = _random((2, 5, 9, 8, 3 * 4), 12)
  target_y = _random((2, 5, 5, 4, 3 * 4), 13)

  graphdef, params = nnx.split(conv)

  def loss(params, x, grouped):
    m = nnx.merge(graphdef, params)
    if grouped:
      y = m(x, repeats=3)
    else:
      y = jnp.concatenate([m(x[..., 4 * i:4 * (i + 1)]) for i in range(3)], -1)
    return jnp.sum(y * target_y), y

  grads = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)
  with compile_target.compiling_for(target):
    (_, y), (gp, gx) = grads(params, x, True)
    (_, y_ref), (gp_ref, gx_ref) = grads(params, x, False)
  g = (gp["kernel"][...], gp["bias"][...], gx)
  g_ref = (gp_ref["kernel"][...], gp_ref["bias"][...], gx_ref)
  assert float(jnp.abs(y_ref).max()) > 0.5
  np.testing.assert_allclose(y, y_ref, atol=1e-5)
  for a, b in zip(g, g_ref):
    assert float(jnp.abs(b).max()) > 1.0
    np.testing.assert_allclose(a, b, atol=1e-5 * float(jnp.abs(b).max()))


def test_patch_conv_matches_a_stride_equal_kernel_conv():
  conv = cpu_kernels.PatchConv(3, 8, 4, dtype=jnp.float32, param_dtype=jnp.float32,
                          rngs=nnx.Rngs(0))
  x = _random((2, 18, 17, 3), 5)  # 18x17: rows/columns beyond whole patches are dropped
  ref = _lax_conv(x, conv.kernel[...], (4, 4), "VALID") + conv.bias[...]
  np.testing.assert_allclose(conv(x), ref, atol=2e-5)


def test_erf_matches_the_exact_function():
  x = np.linspace(-6, 6, 200_001, dtype=np.float32)
  exact = np.array([math.erf(v) for v in x.astype(np.float64)])
  ours = np.asarray(jax.jit(layers.erf)(x), np.float64)
  # The fit itself, evaluated in float64 (machine-independent): 6.5e-8 from erf.
  z = np.clip(x.astype(np.float64), -4.0, 4.0)
  p, q = (np.polyval(np.asarray(c), z * z) for c in (layers._ERF_P, layers._ERF_Q))
  fit = z * p / q
  assert np.abs(fit - exact).max() < 7e-8
  # float32 evaluation: z^2, 6 + 4 Horner steps of a multiply and an add (fused or not,
  # as code generation decides), z * P, P / Q: <= 23 roundings, and with all coefficients of
  # one sign and z^2 >= 0 nothing cancels, so |error| <= 23 u |erf(x)| (u = 2^-24).
  assert (np.abs(ours - fit) <= 23 * 2.0 ** -24 * np.abs(fit) + 1e-12).all()
  err = np.abs(ours - exact)
  assert err.max() < 1.5e-6  # the two above together (jax.lax.erf: 3.1e-7 on this grid)
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


def _layer_norms(dtype, features=96, seed=0):
  """Ours and flax's torch-form LayerNorm with the same random (non-trivial) scale and bias."""
  ours = layers.layer_norm(features, eps=1e-6, dtype=dtype, param_dtype=jnp.float32,
                           rngs=nnx.Rngs(0))
  flax_ln = nnx.LayerNorm(features, epsilon=1e-6, use_fast_variance=False, dtype=dtype,
                          param_dtype=jnp.float32, rngs=nnx.Rngs(0))
  for m in (ours, flax_ln):
    m.scale[...] = 1 + 0.3 * _random((features,), seed)
    m.bias[...] = 0.2 * _random((features,), seed + 1)
  return ours, flax_ln


def test_layer_norm_has_flax_parameters():
  ours, flax_ln = _layer_norms(jnp.float32)
  shapes = lambda m: jax.tree.map(jnp.shape, nnx.to_pure_dict(nnx.state(m, nnx.Param)))
  assert shapes(ours) == shapes(flax_ln) == {"scale": (96,), "bias": (96,)}


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_layer_norm_value_and_gradients_match_flax(dtype):
  """Same forward numbers as nnx.LayerNorm and the gradients autodiff gives it: to float32
  rounding of sums over the 96 features / 200 rows in float32, to one bf16 step in bf16 (the
  two programs may round a float32 intermediate differently before the final cast)."""
  ours, flax_ln = _layer_norms(dtype)
  x = (3 * _random((2, 100, 96), 2) + 1.5).astype(dtype)  # offset: the mean matters
  g = _random((2, 100, 96), 3).astype(dtype)

  def loss(m, x):
    return jnp.sum(m(x).astype(jnp.float32) * g.astype(jnp.float32))

  grad = jax.jit(nnx.grad(loss, argnums=(0, 1)))
  (p_ours, x_ours), (p_flax, x_flax) = grad(ours, x), grad(flax_ln, x)
  f32 = lambda a: np.asarray(a, np.float32)
  step = 2.0 ** -7 if dtype == jnp.bfloat16 else 8 * math.sqrt(200) * 2.0 ** -24
  y = f32(flax_ln(x))
  np.testing.assert_allclose(f32(ours(x)), y, rtol=0, atol=step * np.abs(y).max())
  assert ours(x).dtype == dtype and x_ours.dtype == dtype
  np.testing.assert_allclose(f32(x_ours), f32(x_flax), rtol=0,
                             atol=step * np.abs(f32(x_flax)).max())
  for name in ("scale", "bias"):
    want = f32(getattr(p_flax, name)[...])
    np.testing.assert_allclose(f32(getattr(p_ours, name)[...]), want, rtol=0,
                               atol=step * np.abs(want).max())
  assert np.abs(f32(x_flax)).max() > 0.5 and np.abs(f32(p_flax.scale[...])).max() > 5


@pytest.mark.parametrize("bias", [True, False])
def test_linear_columns_are_the_output_blocks_of_the_layer(bias):
  layer = nnx.Linear(8, 12, use_bias=bias, rngs=nnx.Rngs(0))
  if bias:
    layer.bias[...] = _random((12,), 1)
  x = _random((2, 5, 8), 2)
  blocks = layers.linear_columns(layer, x, 3)
  assert [b.shape for b in blocks] == [(2, 5, 4)] * 3
  # the same dot products, each summing 8 float32 terms (the order may differ by GEMM width)
  np.testing.assert_allclose(np.concatenate(blocks, -1), layer(x), rtol=1e-5, atol=1e-5)
  # the gradient flows to the one shared kernel (and bias)
  grads = nnx.grad(lambda m: sum(jnp.sum(b * (i + 1)) for i, b in
                                 enumerate(layers.linear_columns(m, x, 3))))(layer)
  ref = nnx.grad(lambda m: jnp.sum(m(x) * jnp.repeat(jnp.arange(1.0, 4.0), 4)))(layer)
  np.testing.assert_allclose(grads.kernel[...], ref.kernel[...], rtol=1e-6, atol=1e-6)
  if bias:
    np.testing.assert_allclose(grads.bias[...], ref.bias[...], rtol=1e-6)


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
  f = lambda x: jnp.sum(jnp.sin(cpu_kernels.materialize_cotangent(x * 2.0)) ** 2)
  ref = lambda x: jnp.sum(jnp.sin(x * 2.0) ** 2)
  x = _random((33, 17), 3)
  np.testing.assert_array_equal(jax.jit(f)(x), jax.jit(ref)(x))
  np.testing.assert_allclose(jax.jit(jax.grad(f))(x), jax.jit(jax.grad(ref))(x), rtol=1e-6)
  # the barrier is a conditional in the optimised program (an optimization_barrier would be
  # expanded away before fusion, see its docstring)
  hlo = jax.jit(jax.grad(f)).lower(x).compile().as_text()
  assert "conditional(" in hlo
