"""Small building blocks shared by the three towers, each made for numerical parity with the
PyTorch references (torchvision / transformers), see `../shared/reference/models.md`:

* GELU is the exact erf form (JAX's default is the tanh approximation).
* LayerNorm uses the two-pass variance, as torch does, with a hand-written gradient.
* Linear kernels are stored `(in, out)`; conv kernels channels-last `(..., in/groups, out)`.
The convolutions, written the way XLA:CPU runs fast, are in `cpu_kernels`.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

Dtype = Any

# torchvision and transformers initialise linear weights with N(0, 0.02) (truncated for MViT);
# the exact init only matters when training from scratch, never for converted weights.
trunc_normal_02 = nnx.initializers.truncated_normal(stddev=0.02)


# Rational minimax fit of erf on [-4, 4] in float32 (the coefficients of Eigen's
# `generic_fast_erf_float`, which older XLA releases used too): x * P(x^2) / Q(x^2), |error|
# <= 3.4e-7 over the reals, the accuracy of `jax.lax.erf` (3.1e-7). Outside [-4, 4] erf is
# +-1 in float32.
_ERF_P = (-2.72614225801306e-10, 2.77068142495902e-08, -2.10102402082508e-06,
          -5.69250639462346e-05, -7.34990630326855e-04, -2.95459980854025e-03,
          -1.60960333262415e-02)
_ERF_Q = (-1.45660718464996e-05, -2.13374055278905e-04, -1.68282697438203e-03,
          -7.37332916720468e-03, -1.42647390514189e-02)


def _horner(coefficients: Sequence[float], z: jax.Array) -> jax.Array:
  acc = jnp.asarray(coefficients[0], z.dtype)
  for c in coefficients[1:]:
    acc = acc * z + jnp.asarray(c, z.dtype)
  return acc


def erf(x: jax.Array) -> jax.Array:
  """erf in float32 arithmetic as one rational function: (...) -> (...), same dtype.

  XLA:CPU's `lax.erf` is ~3.5x slower than an exp (7.6 ms vs 2.1 ms for MViT-S's 4.8M-element
  MLP activation); this fit costs what an exp costs, at the same accuracy.
  """
  z = jnp.clip(x.astype(jnp.float32), -4.0, 4.0)
  z2 = z * z
  return (z * _horner(_ERF_P, z2) / _horner(_ERF_Q, z2)).astype(x.dtype)


_SQRT_HALF = 0.7071067811865476
_INV_SQRT_2PI = 0.3989422804014327


@jax.custom_vjp
def gelu(x: jax.Array) -> jax.Array:
  """Exact (erf) GELU, as `torch.nn.GELU()` and BERT's "gelu": x * Phi(x). (...) -> (...).

  Computed in float32 whatever the input dtype (as torch does for bf16). The gradient is the
  analytic one, Phi(x) + x * phi(x), written out so that autodiff does not differentiate the
  rational fit of erf (slower and less accurate).
  """
  x32 = x.astype(jnp.float32)
  return (0.5 * x32 * (1.0 + erf(x32 * _SQRT_HALF))).astype(x.dtype)


def _gelu_fwd(x):
  return gelu(x), x


def _gelu_bwd(x, g):
  # The barrier keeps XLA from sharing the forward pass's float32 copy of x with this one:
  # shared, the copy is a saved residual (twice the bytes of x, written and read again);
  # recomputed here, it costs nothing but a convert inside the backward fusion.
  x32 = jax.lax.optimization_barrier(x).astype(jnp.float32)
  cdf = 0.5 * (1.0 + erf(x32 * _SQRT_HALF))
  pdf = jnp.exp(-0.5 * x32 * x32) * _INV_SQRT_2PI
  return ((g.astype(jnp.float32) * (cdf + x32 * pdf)).astype(g.dtype),)


gelu.defvjp(_gelu_fwd, _gelu_bwd)


def canonical_dtype(name: str | Dtype) -> jnp.dtype:
  """'bfloat16' / jnp.bfloat16 / np.float32 ... -> jnp.dtype."""
  return jnp.dtype(name)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def normalize(x: jax.Array, scale: jax.Array, bias: jax.Array, eps: float) -> jax.Array:
  """torch's LayerNorm over the last axis: x (..., C), scale (C,), bias (C,) -> (..., C).

  Statistics and arithmetic in float32 whatever the input dtype, result in x's dtype: the
  same operations in the same order as `nnx.LayerNorm(use_fast_variance=False)`. The gradient
  is written out so that the backward pass reads x in its own dtype (see `_normalize_bwd`).
  """
  y, _ = _normalize_fwd(x, scale, bias, eps)
  return y


def _normalize_fwd(x, scale, bias, eps):
  x32 = x.astype(jnp.float32)
  mean = jnp.mean(x32, axis=-1, keepdims=True)
  var = jnp.mean(jnp.square(x32 - mean), axis=-1, keepdims=True)
  rstd = jax.lax.rsqrt(var + eps)
  y = (x32 - mean) * (rstd * scale.astype(jnp.float32)) + bias.astype(jnp.float32)
  return y.astype(x.dtype), (x, mean, rstd, scale, bias)


def _normalize_bwd(eps, residuals, g):
  del eps
  x, mean, rstd, scale, bias = residuals
  # As in GELU's backward: without the barrier XLA shares the forward pass's float32
  # x - mean with this pass, a saved (..., C) float32 residual written once and read twice.
  x_hat = (jax.lax.optimization_barrier(x).astype(jnp.float32) - mean) * rstd
  g32 = g.astype(jnp.float32)
  rows = tuple(range(x.ndim - 1))
  d_scale = jnp.sum(g32 * x_hat, axis=rows)
  d_bias = jnp.sum(g32, axis=rows)
  d_xhat = g32 * scale.astype(jnp.float32)
  d_x = rstd * (d_xhat - jnp.mean(d_xhat, axis=-1, keepdims=True)
                - x_hat * jnp.mean(d_xhat * x_hat, axis=-1, keepdims=True))
  return d_x.astype(x.dtype), d_scale.astype(scale.dtype), d_bias.astype(bias.dtype)


normalize.defvjp(_normalize_fwd, _normalize_bwd)


class LayerNorm(nnx.Module):
  """A torch-compatible LayerNorm over the last axis: `scale` and `bias` (C,) in param_dtype,
  cast to the compute dtype as nnx.LayerNorm does; stats always in float32. (..., C) -> (..., C).

  Same parameter names and numbers as `nnx.LayerNorm(use_fast_variance=False)`; the gradient
  is `normalize`'s, which moves less memory in bf16 training.
  """

  def __init__(self, features: int, *, eps: float, dtype: Dtype, param_dtype: Dtype,
               rngs: nnx.Rngs):
    del rngs  # ones and zeros: nothing random, the argument keeps the layers' signature
    self.num_features = features
    self.epsilon = eps
    self.dtype = dtype
    self.scale = nnx.Param(jnp.ones((features,), param_dtype))
    self.bias = nnx.Param(jnp.zeros((features,), param_dtype))

  def __call__(self, x: jax.Array) -> jax.Array:
    dtype = self.dtype or jnp.result_type(x, self.scale[...], self.bias[...])
    return normalize(x.astype(dtype), self.scale[...].astype(dtype),
                     self.bias[...].astype(dtype), self.epsilon)


def layer_norm(features: int, *, eps: float, dtype: Dtype, param_dtype: Dtype,
               rngs: nnx.Rngs) -> LayerNorm:
  """A torch-compatible LayerNorm over the last axis (stats always in fp32)."""
  return LayerNorm(features, eps=eps, dtype=dtype, param_dtype=param_dtype, rngs=rngs)


def linear(in_features: int, out_features: int, *, dtype: Dtype, param_dtype: Dtype,
           rngs: nnx.Rngs, use_bias: bool = True,
           kernel_init=trunc_normal_02) -> nnx.Linear:
  return nnx.Linear(in_features, out_features, use_bias=use_bias, dtype=dtype,
                    param_dtype=param_dtype, kernel_init=kernel_init, rngs=rngs)


def linear_columns(layer: nnx.Linear, x: jax.Array, parts: int) -> list[jax.Array]:
  """`layer(x)` split into `parts` equal blocks of output features, each its own GEMM.

  x: (..., C_in) -> parts x (..., C_out / parts). Same numbers as slicing `layer(x)`; why:
  the backward pass of a sliced output stacks the blocks' gradients into one (..., C_out)
  buffer before the weight and input gradients read it; per-block GEMMs read them in place.
  """
  return linear_each(layer, [x], parts)[0]


def linear_each(layer: nnx.Linear, xs: Sequence[jax.Array], parts: int = 1
                ) -> list[list[jax.Array]]:
  """`linear_columns(layer, x, parts)` for each x of xs, GEMMs apart: the GEMMs of xs[1:]
  read the kernel through `unmerged_weight`. The kernel is cast to the compute dtype once, so
  the weight gradients of all xs add up in that dtype before XLA all-reduces them (cast per x,
  they would add up, and be all-reduced, in the parameters' float32)."""
  kernel = layer.kernel[...]
  bias = layer.bias[...] if layer.bias is not None else None
  _, kernel, bias = nnx.nn.dtypes.promote_dtype((xs[0], kernel, bias), dtype=layer.dtype)
  width = kernel.shape[-1] // parts
  outs = []
  for j, x in enumerate(xs):
    x = x.astype(kernel.dtype)
    k = kernel if j == 0 else unmerged_weight(kernel)
    outs.append([])
    for i in range(parts):
      y = jnp.dot(x, k[:, i * width:(i + 1) * width], precision=layer.precision)
      outs[-1].append(y if bias is None else y + bias[i * width:(i + 1) * width])
  return outs


@jax.custom_vjp
def unmerged_weight(kernel: jax.Array) -> jax.Array:
  """The kernel, as a value XLA cannot see is the kernel another GEMM reads.

  Why: XLA:GPU merges GEMMs that share an operand into one over their other operands
  concatenated (its DotMerger). MViT sends a clip's class token and its token grid through a
  layer apart so that the grid's GEMMs contract over a multiple of 512 tokens (see
  `mvit.Tokens`); merged, the GEMM runs on a concatenated copy of both and its output is sliced
  apart again (the paper step compiled for an H200: 4.8 GB more HBM traffic). An optimisation
  barrier costs nothing at run time. Its gradient is the identity without a barrier, so XLA
  adds the layer's weight gradients before it all-reduces them (a barrier there: two
  all-reduces).
  """
  return jax.lax.optimization_barrier(kernel)


def _unmerged_fwd(kernel):
  return jax.lax.optimization_barrier(kernel), None


def _unmerged_bwd(_, g):
  return (g,)


unmerged_weight.defvjp(_unmerged_fwd, _unmerged_bwd)


class Dropout(nnx.Dropout):
  """`nnx.Dropout` drawing 16 random bits per element instead of 32.

  Why: the mask's random bits are a visible cost on CPU (BERT-base's attention-probability
  dropout alone draws 6.3M numbers per layer at batch 2; threefry made them ~1 s of a 27 s
  MViT-S + BERT step). Two 16-bit draws come from each 32-bit word. An element is kept iff its
  draw is >= round(rate * 2^16), so the drop probability is the rate rounded to 1/65536 (0.1 ->
  0.100006); kept elements are rescaled by the exact keep probability, so E[output] = input.
  Same interface, `deterministic` flag and rng stream as `nnx.Dropout`.
  """

  def __call__(self, inputs: jax.Array, *, deterministic: bool | None = None,
               rngs: nnx.Rngs | nnx.RngStream | jax.Array | None = None) -> jax.Array:
    """inputs: (...) -> (...), masked and rescaled unless deterministic."""
    deterministic = self.deterministic if deterministic is None else deterministic
    if deterministic is None:
      raise ValueError("Dropout needs `deterministic`: call model.train() / model.eval(), or "
                       "pass it to the constructor or the call")
    threshold = round(self.rate * 65536)
    if threshold == 0 or deterministic:
      return inputs
    if threshold >= 65536:
      return jnp.zeros_like(inputs)
    rngs = self.rngs if rngs is None else rngs
    if isinstance(rngs, nnx.Rngs):
      key = rngs[self.rng_collection]()
    elif isinstance(rngs, nnx.RngStream):
      key = rngs()
    elif isinstance(rngs, jax.Array):
      key = rngs
    else:
      raise TypeError(f"Dropout needs rngs (Rngs, RngStream or a key), got {type(rngs)}")
    shape = list(inputs.shape)
    for dim in self.broadcast_dims:
      shape[dim] = 1
    # words over the last axis only, so a batch-sharded input keeps a batch-sharded mask
    words = jax.random.bits(key, (*shape[:-1], -(-shape[-1] // 2)), jnp.uint32)
    draws = jax.lax.bitcast_convert_type(words, jnp.uint16).reshape(*shape[:-1], -1)
    keep = draws[..., :shape[-1]] >= threshold
    keep_prob = 1.0 - threshold / 65536
    return jax.lax.select(jnp.broadcast_to(keep, inputs.shape),
                          inputs / jnp.asarray(keep_prob, inputs.dtype), jnp.zeros_like(inputs))


def drop_path(rate: float, ndim: int, rngs: nnx.Rngs) -> Dropout:
  """Stochastic depth ("row" mode): drops whole samples of a residual branch.

  Same maths as `torchvision.ops.StochasticDepth(p, "row")`: keep with probability 1 - p and
  rescale by 1 / (1 - p). The mask is per sample and broadcast over the other `ndim - 1` axes.
  """
  return Dropout(rate, broadcast_dims=tuple(range(1, ndim)), rngs=rngs)


def param_count(module: nnx.Module) -> int:
  """Number of trainable scalars in `module` (works on abstract `nnx.eval_shape` modules)."""
  return sum(int(x.size) for x in jax.tree.leaves(nnx.state(module, nnx.Param)))
