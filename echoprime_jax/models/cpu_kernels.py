"""Convolutions and a fusion cut written the way XLA:CPU runs them fast, with the same maths as
torch's layers (the parity tests compare them to `jax.lax.conv_general_dilated` and torch):

* `depthwise_conv` / `DepthwiseConv`: a depthwise convolution as strided shifted slices (XLA:CPU's
  grouped convolution is ~100x slower), with a hand-written gradient; in GPU programs
  `grouped_conv` (cuDNN's convolution, the same hand-written input gradient);
* `conv3d_by_frames` / `Conv3d`: a dense 3D convolution as temporal taps of 2D ones;
* `PatchConv`: stride == kernel convolution as reshape + matmul;
* `materialize_cotangent`: an identity that stops XLA:CPU fusing a residual stack's gradient.
On GPU each lowers to code as good as the generic form.
"""

from __future__ import annotations

import functools
import itertools
from typing import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from echoprime_jax.models import compile_target


@jax.custom_vjp
def materialize_cotangent(x: jax.Array) -> jax.Array:
  """Identity whose gradient is written to memory before anything reads it.

  Why: in a residual stack the gradient of the stream is a sum that grows by a few terms per
  block, and XLA:CPU's loop fusion happily inlines such elementwise chains into every consumer,
  recomputing the whole chain per element. On MViT-S's 10 identical stage-3 blocks this turned
  the weight-gradient transposes into ~370-op fusions costing 0.1-0.2 s each (2.4 s of a 27 s
  step). Calling this on each block's input cuts the chain at block boundaries (measured: those
  fusions gone, 23.6 -> 21.0 s of op time per step); the forward pass is untouched.
  """
  return x


def _materialize_fwd(x):
  return x, None


def _materialize_bwd(_, g):
  # XLA:CPU expands `optimization_barrier` away before fusion, so it cannot cut a fusion.
  # A conditional can: its operand and result are buffers. The predicate is always true but
  # depends on the data (any int32 with its low bit set is non-zero), so the conditional
  # survives simplification; the false branch, never taken, differs only so that XLA cannot
  # merge the two. CPU only: on a GPU a conditional costs a device-to-host round trip for
  # its predicate, and its fusion heuristics are not the ones measured here. (On a sharded
  # cotangent the predicate's element lives on one device: a scalar broadcast per call,
  # negligible next to a CPU training step; the data-parallel tests cover its correctness.)
  if compile_target.platform() != "cpu":
    return (g,)
  bits = jax.lax.bitcast_convert_type(g.reshape(-1)[0].astype(jnp.float32), jnp.int32)
  return (jax.lax.cond((bits | 1) != 0, lambda t: t, lambda t: -t, g),)


materialize_cotangent.defvjp(_materialize_fwd, _materialize_bwd)


def _depthwise_taps(x: jax.Array, kernel: jax.Array, strides: Sequence[int],
                    out_size: Sequence[int]) -> jax.Array:
  """Sum over taps of strided slices of the (already padded) x times the tap's weights."""
  acc = None
  for tap in itertools.product(*(range(k) for k in kernel.shape[:-2])):
    limit = [x.shape[0]] + [t + s * (o - 1) + 1 for t, s, o in zip(tap, strides, out_size)]
    window = jax.lax.slice(x, (0, *tap, 0), (*limit, x.shape[-1]), (1, *strides, 1))
    term = window * kernel[tap][0]
    acc = term if acc is None else acc + term
  return acc


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def depthwise_conv(x: jax.Array, kernel: jax.Array, strides: Sequence[int],
                   padding: Sequence[tuple[int, int]]) -> jax.Array:
  """Depthwise convolution as a sum of strided shifted slices.

  x: (B, *spatial, C); kernel: (*k, 1, C) (Flax layout of a `groups=C` conv).
  XLA:CPU lowers grouped convolutions to a generic loop that is ~100x slower than PyTorch's
  depthwise kernels (0.84 s vs 9 ms for MViT's 3x3x3 pool on 8x56x56x96); one multiply-add per
  tap over strided slices fuses into a single elementwise loop (4 ms). On GPU XLA fuses it just
  as well.

  The gradient is hand-written (`_depthwise_bwd`): autodiff would transpose every tap's
  strided slice into a full-size padded copy (27 input-sized buffers per 3x3x3 conv, ~6x the
  forward's HLO and most of the MViT compile time); instead the input gradient is built per
  stride phase on the output grid and interleaved once.
  """
  x = jnp.pad(x, [(0, 0), *padding, (0, 0)])
  out_size = _out_size(x.shape, kernel.shape[:-2], strides)
  return _depthwise_taps(x, kernel.astype(x.dtype), strides, out_size)


def _out_size(padded_shape, ksize, strides) -> list[int]:
  return [(padded_shape[1 + i] - k) // s + 1 for i, (k, s) in enumerate(zip(ksize, strides))]


def _depthwise_fwd(x, kernel, strides, padding):
  return depthwise_conv(x, kernel, strides, padding), (x, kernel)


def _depthwise_bwd(strides, padding, residuals, g):
  x, kernel = residuals
  return (_depthwise_input_grad(x.shape, x.dtype, kernel, g, strides, padding),
          _depthwise_kernel_grad(x, kernel, g, strides, padding))


def _depthwise_kernel_grad(x, kernel, g, strides, padding):
  """Per tap, the window of x_pad times g, summed over batch and positions -> (*k, 1, C)."""
  ksize = kernel.shape[:-2]
  nd = len(ksize)
  xp = jnp.pad(x, [(0, 0), *padding, (0, 0)])
  out_size = list(g.shape[1:-1])
  dk = []
  for tap in itertools.product(*(range(k) for k in ksize)):
    limit = [xp.shape[0]] + [t + s * (o - 1) + 1 for t, s, o in zip(tap, strides, out_size)]
    window = jax.lax.slice(xp, (0, *tap, 0), (*limit, xp.shape[-1]), (1, *strides, 1))
    dk.append(jnp.sum((window * g).astype(jnp.float32), axis=tuple(range(nd + 1))))
  return jnp.stack(dk).reshape(*ksize, 1, -1).astype(kernel.dtype)


def _depthwise_input_grad(x_shape, x_dtype, kernel, g, strides, padding):
  """Input gradient by stride phase: x_pad[c * s + r] receives w[t] * g[c - t // s] from every
  tap t with t % s == r (per spatial dim). Each phase is a sum of shifted slices of g (padded
  by the largest shift) on the output grid; the phases are interleaved into the padded input
  grid with one stack + reshape, then the padding is cut away. x_shape: (B, *spatial, C)."""
  ksize = kernel.shape[:-2]
  nd = len(ksize)
  padded = [n + lo + hi for n, (lo, hi) in zip(x_shape[1:-1], padding)]
  out_size = list(g.shape[1:-1])
  w = kernel.astype(g.dtype)
  shift = [(k - 1) // s for k, s in zip(ksize, strides)]
  gp = jnp.pad(g, [(0, 0), *[(q, q) for q in shift], (0, 0)])
  coarse = [o + q for o, q in zip(out_size, shift)]
  phases = {}
  for tap in itertools.product(*(range(k) for k in ksize)):
    r = tuple(t % s for t, s in zip(tap, strides))
    q = [t // s for t, s in zip(tap, strides)]
    start = [sh - qq for sh, qq in zip(shift, q)]  # gp index of g[c - q] at c = 0
    window = jax.lax.slice(gp, (0, *start, 0), (gp.shape[0], *[a + c for a, c in
                                                              zip(start, coarse)], gp.shape[-1]))
    term = window * w[tap][0]
    phases[r] = term if r not in phases else phases[r] + term
  zero = jnp.zeros((g.shape[0], *coarse, g.shape[-1]), g.dtype)
  grid = [phases.get(r, zero) for r in itertools.product(*(range(s) for s in strides))]
  # (phases..., B, *coarse, C) -> (B, c0, s0, c1, s1, ..., C) -> (B, c0*s0, c1*s1, ..., C)
  full = jnp.stack(grid).reshape(*strides, g.shape[0], *coarse, g.shape[-1])
  order = [nd] + [i for d in range(nd) for i in (nd + 1 + d, d)] + [2 * nd + 1]
  full = full.transpose(order).reshape(g.shape[0], *[c * s for c, s in zip(coarse, strides)],
                                       g.shape[-1])
  # the padded input grid may extend past the last position any output reads
  extra = [max(0, p - f) for p, f in zip(padded, full.shape[1:-1])]
  if any(extra):
    full = jnp.pad(full, [(0, 0), *[(0, e) for e in extra], (0, 0)])
  dx = jax.lax.slice(full, (0, *[lo for lo, _ in padding], 0),
                     (full.shape[0], *[lo + n for (lo, _), n in zip(padding, x_shape[1:-1])],
                      full.shape[-1]))
  return dx.astype(x_dtype)


depthwise_conv.defvjp(_depthwise_fwd, _depthwise_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def grouped_conv(x: jax.Array, kernel: jax.Array, strides: Sequence[int],
                 padding: Sequence[tuple[int, int]]) -> jax.Array:
  """The same depthwise convolution as XLA's grouped convolution (its GPU form: cuDNN).
  x: (B, *spatial, C); kernel: (*k, 1, C).

  The forward pass and the kernel gradient are XLA's convolutions (cuDNN's); the input
  gradient is `_depthwise_input_grad`'s phases. Why: XLA rewrites a strided grouped conv's
  input gradient as a forward convolution over an explicitly dilated and padded copy of the
  gradient (stride 8: 64 times its size, mostly zeros, written then read); the phases read
  the gradient once and write the input gradient once, in one fusion (MViT-S paper step on
  an H200: 7 GB less HBM traffic per step).
  """
  return _grouped_conv(x, kernel, strides, padding)


def _grouped_conv(x, kernel, strides, padding):
  nd = x.ndim - 2
  spatial = "DHW"[-nd:] if nd <= 3 else None
  if spatial is None:
    raise ValueError(f"grouped_conv takes 1-3 spatial dims, got {nd}")
  numbers = (f"N{spatial}C", f"{spatial}IO", f"N{spatial}C")
  return jax.lax.conv_general_dilated(x, kernel.astype(x.dtype), tuple(strides), tuple(padding),
                                      dimension_numbers=numbers,
                                      feature_group_count=x.shape[-1])


def _grouped_fwd(x, kernel, strides, padding):
  return _grouped_conv(x, kernel, strides, padding), (x, kernel)


def _grouped_bwd(strides, padding, residuals, g):
  x, kernel = residuals
  _, kernel_vjp = jax.vjp(lambda k: _grouped_conv(x, k, strides, padding), kernel)
  return (_depthwise_input_grad(x.shape, x.dtype, kernel, g, strides, padding),
          kernel_vjp(g)[0])


grouped_conv.defvjp(_grouped_fwd, _grouped_bwd)


class DepthwiseConv(nnx.Module):
  """`groups=C` convolution (torch `Conv{2,3}d(C, C, k, groups=C)`); kernel (*k, 1, C)."""

  def __init__(self, channels: int, kernel_size: Sequence[int], strides: Sequence[int],
               padding: Sequence[int], *, use_bias: bool, dtype, param_dtype, rngs: nnx.Rngs):
    shape = (*kernel_size, 1, channels)
    # fan_in = prod(kernel_size) for a depthwise kernel; (1/3, fan_in, uniform) is torch's default.
    init = nnx.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform", in_axis=-2,
                                             out_axis=-1)
    self.kernel = nnx.Param(init(rngs.params(), shape, param_dtype))
    self.bias = (nnx.Param(jnp.zeros((channels,), param_dtype)) if use_bias else None)
    self.strides = tuple(strides)
    self.padding = tuple((p, p) for p in padding)
    self.dtype = dtype

  def __call__(self, x: jax.Array, repeats: int = 1) -> jax.Array:
    """x: (B, *spatial, repeats * C) -> (B, *spatial', repeats * C): with repeats > 1 the one
    kernel convolves each of `repeats` consecutive C-channel groups (MViT's heads share it)."""
    if self.dtype is not None:
      x = x.astype(self.dtype)
    kernel = self.kernel[...]
    if repeats > 1:
      kernel = jnp.tile(kernel, (1,) * (kernel.ndim - 1) + (repeats,))
    if compile_target.platform() == "cpu":
      y = depthwise_conv(x, kernel, self.strides, self.padding)
    else:  # GPUs: cuDNN's depthwise kernels (the taps' backward would read x once per tap)
      y = grouped_conv(x, kernel, self.strides, self.padding)
    if self.bias is not None:
      y = y + jnp.tile(self.bias[...], repeats).astype(y.dtype)
    return y


def conv3d_by_frames(x: jax.Array, kernel: jax.Array, strides: Sequence[int],
                     padding: Sequence[tuple[int, int]]) -> jax.Array:
  """A dense Conv3d computed as a sum over temporal taps of strided 2D convolutions.

  x: (B, T, H, W, C_in); kernel: (kt, kh, kw, C_in, C_out). XLA:CPU's 3D convolution with
  3 input channels is slow (93 ms for MViT's patch embedding at 16x224x224 vs 12 ms in
  PyTorch); the same maths as kt 2D convolutions over frame batches takes 53 ms.
  """
  b = x.shape[0]
  (pt0, pt1), *spatial_pad = padding
  st, *spatial_strides = strides
  x = jnp.pad(x, [(0, 0), (pt0, pt1), (0, 0), (0, 0), (0, 0)])
  kt = kernel.shape[0]
  t_out = (x.shape[1] - kt) // st + 1
  kernel = kernel.astype(x.dtype)
  out = None
  for a in range(kt):
    frames = jax.lax.slice_in_dim(x, a, a + st * (t_out - 1) + 1, st, axis=1)
    y = jax.lax.conv_general_dilated(frames.reshape(-1, *frames.shape[2:]), kernel[a],
                                     spatial_strides, spatial_pad,
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
    out = y if out is None else out + y
  return out.reshape(b, t_out, *out.shape[1:])


class Conv3d(nnx.Module):
  """Dense Conv3d with torch's padding semantics; kernel (kt, kh, kw, C_in, C_out)."""

  def __init__(self, in_channels: int, out_channels: int, kernel_size: Sequence[int],
               strides: Sequence[int], padding: Sequence[int], *, dtype, param_dtype,
               rngs: nnx.Rngs):
    shape = (*kernel_size, in_channels, out_channels)
    init = nnx.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform", in_axis=(0, 1, 2, 3),
                                             out_axis=-1)  # torch's default
    self.kernel = nnx.Param(init(rngs.params(), shape, param_dtype))
    self.bias = nnx.Param(jnp.zeros((out_channels,), param_dtype))
    self.strides = tuple(strides)
    self.padding = tuple((p, p) for p in padding)
    self.dtype = dtype

  def __call__(self, x: jax.Array) -> jax.Array:
    """x: (B, T, H, W, C_in) -> (B, T', H', W', C_out)."""
    x = x.astype(self.dtype)
    y = conv3d_by_frames(x, self.kernel[...], self.strides, self.padding)
    return y + self.bias[...].astype(y.dtype)


class PatchConv(nnx.Module):
  """Conv2d with stride == kernel and no padding (ConvNeXt's stem and downsampling layers).

  Non-overlapping patches make it an exact reshape + one matmul, which XLA:CPU runs at GEMM
  speed; its generic convolution is several times slower for these shapes. Rows/columns
  beyond a whole patch are dropped, as torch's VALID convolution does.
  kernel: (k, k, C_in, C_out), torch `Conv2d(C_in, C_out, k, stride=k)`.
  """

  def __init__(self, in_channels: int, out_channels: int, patch: int, *, dtype, param_dtype,
               rngs: nnx.Rngs):
    init = nnx.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform", in_axis=(0, 1, 2),
                                             out_axis=-1)  # torch's default
    self.kernel = nnx.Param(init(rngs.params(), (patch, patch, in_channels, out_channels),
                                 param_dtype))
    self.bias = nnx.Param(jnp.zeros((out_channels,), param_dtype))
    self.patch = patch
    self.dtype = dtype

  def __call__(self, x: jax.Array) -> jax.Array:
    """x: (B, H, W, C_in) -> (B, H // k, W // k, C_out)."""
    k = self.patch
    b, h, w, c = x.shape
    x = x[:, :h // k * k, :w // k * k].astype(self.dtype)
    x = x.reshape(b, h // k, k, w // k, k, c).transpose(0, 1, 3, 2, 4, 5)
    x = x.reshape(b, h // k, w // k, k * k * c)
    kernel = self.kernel[...].astype(x.dtype).reshape(k * k * c, -1)
    return x @ kernel + self.bias[...].astype(x.dtype)
