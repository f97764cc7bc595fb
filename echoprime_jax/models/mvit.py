"""MViTv2 video tower in Flax NNX: torchvision's `mvit_v2_s`, number for number.

Why NNX: the Flax team recommends it for new code, MaxText defaults to it, and its plain
Python objects make weight import a matter of walking attributes. Hot loops should
`nnx.split` once and call a pure `jax.jit` step that `nnx.merge`s inside.

Layout: channels-last. `video: (B, T, H, W, 3)` float (already normalised) ->
`(B, num_outputs)`. Tokens are flattened t-major (index = t*H*W + h*W + w) exactly as
torchvision does, with a class token in front, so every pooling step and the relative
position tables line up with the PyTorch weights.

Attention and the relative-position term (MViTv2's decomposed rel-pos):

  logits[q, k] = s * <q, k> + <q, Rt[tq, tk]> + <q, Rh[hq, hk]> + <q, Rw[wq, wk]>   (q, k != cls)

The logits are rewritten as ONE dot product, so the rel-pos term never needs a bias tensor of
the attention's size: each query is extended with its rel-pos scores
`[rel_t(q, :), rel_h(q, :), rel_w(q, :)]` (kt + kh + kw numbers) and each key with the one-hot
codes of its (t, h, w) coordinates, so the extra dot product is exactly
`rel_t[q, tk] + rel_h[q, hk] + rel_w[q, wk]`. The class token gets zeros on both sides (no
rel-pos on the cls row/column, as in torchvision). Exactness of the rewrite is checked against
torchvision in `tests/models/test_mvit.py`.

* `attention="xla"`: einsum -> fp32 softmax -> einsum on the extended q/k. On CPU this beats
  adding a broadcast bias (0.075 s vs 0.096 s for block 0 at 16x224: the extra 22 columns ride
  on the GEMM, the bias traffic disappears).
* `attention="cudnn"`: cuDNN's fused flash attention on the extended q/k (`models/attention.py`
  pads the odd token counts and the 118 / 132-wide heads to what cuDNN accepts), so the (N, N')
  logits of block 0 never reach HBM.
* `attention="auto"` picks "cudnn" for GPU programs with a 16-bit compute dtype, "xla" otherwise.

Other frame counts / resolutions work: the rel-pos tables are created for the config's
`num_frames` x `image_size` (as torchvision does) and linearly resized at call time when the
grid differs (torchvision's `_interpolate`: `F.interpolate(mode="linear")`).

Kept in one file (~480 lines): one architecture, read top to bottom against torchvision's
mvit.py, which it mirrors number for number.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from echoprime_jax.models import attention, compile_target, cpu_kernels, layers

Grid = tuple[int, int, int]  # (T, H, W) token grid
# A block's token stream: `(x,)`, x: (B, 1 + N, C) with the class token in front, or, in GPU
# programs, `(cls, tokens)`: (B, 1, C) and (B, N, C) apart, each linear layer two GEMMs. Why
# apart: a weight-gradient GEMM contracts over the tokens, and B * (1 + N) is odd, so XLA's
# split-K GEMMs pad both operands to a multiple of 512-2048 rows (a copy of each); B * N is
# such a multiple (N = 8 * 56 * 56 and its pooled grids). The paper step compiled for an
# H200: 136.4 -> ~124 GB of HBM traffic. A CPU program keeps one array: XLA:CPU runs two GEMMs
# (or two LayerNorms) per layer 3-18% slower than one.
Tokens = tuple[jax.Array, ...]


# ----------------------------------------------------------------------------- config


@dataclasses.dataclass(frozen=True)
class BlockSpec:
  """One multiscale block (torchvision's `MSBlockConfig`). Empty kernel/stride = no pooling."""
  num_heads: int
  input_channels: int
  output_channels: int
  kernel_q: tuple[int, ...] = (3, 3, 3)
  kernel_kv: tuple[int, ...] = (3, 3, 3)
  stride_q: tuple[int, ...] = (1, 1, 1)
  stride_kv: tuple[int, ...] = (1, 1, 1)


@dataclasses.dataclass(frozen=True)
class MViTConfig:
  """Everything that defines an MViT; the defaults are torchvision's `mvit_v2_s` flags."""
  blocks: tuple[BlockSpec, ...]
  num_frames: int = 16
  image_size: tuple[int, int] = (224, 224)
  patch_kernel: tuple[int, int, int] = (3, 7, 7)
  patch_stride: tuple[int, int, int] = (2, 4, 4)
  patch_padding: tuple[int, int, int] = (1, 3, 3)
  residual_pool: bool = True
  residual_with_cls_embed: bool = False
  rel_pos: bool = True
  proj_after_attn: bool = True
  norm_eps: float = 1e-6
  stochastic_depth: float = 0.2
  attention_dropout: float = 0.0
  head_dropout: float = 0.5
  num_outputs: int = 512  # EchoPrime's head; 400 = Kinetics; 0 = no head (768-d features)
  dtype: str = "float32"  # compute dtype (activations)
  param_dtype: str = "float32"
  attention: str = "auto"  # models/attention.py: "auto" | "xla" | "cudnn" | "xla_padded"
  remat: bool = False  # recompute each block's activations in the backward pass (memory)

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)

  @classmethod
  def from_dict(cls, d: dict[str, Any]) -> "MViTConfig":
    d = dict(d)
    d["blocks"] = tuple(BlockSpec(**{k: tuple(v) if isinstance(v, list) else v
                                     for k, v in b.items()}) for b in d["blocks"])
    for k in ("image_size", "patch_kernel", "patch_stride", "patch_padding"):
      if k in d:
        d[k] = tuple(d[k])
    return cls(**d)

  def replace(self, **kw) -> "MViTConfig":
    return dataclasses.replace(self, **kw)


def _stage_blocks(heads, in_ch, out_ch, kq, kkv, sq, skv) -> tuple[BlockSpec, ...]:
  return tuple(BlockSpec(h, i, o, tuple(a), tuple(b), tuple(c), tuple(d))
               for h, i, o, a, b, c, d in zip(heads, in_ch, out_ch, kq, kkv, sq, skv))


def mvit_v2_s(**overrides) -> MViTConfig:
  """torchvision `mvit_v2_s` with EchoPrime's 512-d head (34,623,872 parameters)."""
  s1, s2 = (1, 1, 1), (1, 2, 2)
  blocks = _stage_blocks(
      heads=[1, 2, 2, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 8, 8],
      in_ch=[96, 96, 192, 192] + [384] * 11 + [768],
      out_ch=[96, 192, 192, 384] + [384] * 10 + [768, 768],
      kq=[(3, 3, 3)] * 16,
      kkv=[(3, 3, 3)] * 16,
      sq=[s1, s2, s1, s2] + [s1] * 10 + [s2, s1],
      skv=[(1, 8, 8), (1, 4, 4), (1, 4, 4)] + [(1, 2, 2)] * 11 + [s1, s1],
  )
  return MViTConfig(blocks=blocks).replace(**overrides)


def mvit_v1_b(**overrides) -> MViTConfig:
  """torchvision `mvit_v1_b` (absolute positions, no residual pooling, projection in the MLP)."""
  no = ()
  kq = [no, (3, 3, 3), no, (3, 3, 3)] + [no] * 10 + [(3, 3, 3), no]
  sq = [no, (1, 2, 2), no, (1, 2, 2)] + [no] * 10 + [(1, 2, 2), no]
  skv = [(1, 8, 8), (1, 4, 4), (1, 4, 4), (1, 2, 2)] + [(1, 2, 2)] * 10 + [(1, 1, 1)] * 2
  blocks = _stage_blocks(
      heads=[1, 2, 2, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 8, 8],
      in_ch=[96, 192, 192] + [384] * 11 + [768, 768],
      out_ch=[192, 192] + [384] * 11 + [768, 768, 768],
      kq=kq, kkv=[(3, 3, 3)] * 16, sq=sq, skv=skv)
  cfg = MViTConfig(blocks=blocks, residual_pool=False, residual_with_cls_embed=True,
                   rel_pos=False, proj_after_attn=False, stochastic_depth=0.2, num_outputs=400)
  return cfg.replace(**overrides)


def mvit_tiny(**overrides) -> MViTConfig:
  """A 4-block MViTv2 on 8x64x64 clips for tests and laptop demos (~0.4M parameters).

  Same block types as `mvit_v2_s`: kv pooling, q pooling with a channel change, a block
  whose q grid is smaller than its kv grid, so every code path of the big model runs.
  """
  blocks = _stage_blocks(
      heads=[1, 2, 2, 4], in_ch=[32, 32, 64, 64], out_ch=[32, 64, 64, 128],
      kq=[(3, 3, 3)] * 4, kkv=[(3, 3, 3)] * 4,
      sq=[(1, 1, 1), (1, 2, 2), (1, 1, 1), (1, 2, 2)],
      skv=[(1, 4, 4), (1, 2, 2), (1, 2, 2), (1, 1, 1)])
  return MViTConfig(blocks=blocks, num_frames=8, image_size=(64, 64), num_outputs=64,
                    stochastic_depth=0.1).replace(**overrides)


def _prod(s: Sequence[int]) -> int:
  return int(np.prod(s)) if len(s) else 1


def _pooled(grid: Grid, stride: Sequence[int]) -> Grid:
  return tuple(g // s for g, s in zip(grid, stride)) if len(stride) else grid


def block_input_grids(cfg: MViTConfig) -> list[Grid]:
  """Token grid entering each block at the config's clip size (sets rel-pos table sizes)."""
  grid = (cfg.num_frames // cfg.patch_stride[0], cfg.image_size[0] // cfg.patch_stride[1],
          cfg.image_size[1] // cfg.patch_stride[2])
  grids = []
  for b in cfg.blocks:
    grids.append(grid)
    grid = _pooled(grid, b.stride_q)
  return grids


# ------------------------------------------------------------------ relative positions


def resize_table(table: jax.Array, length: int) -> jax.Array:
  """Linear resize along axis 0 like `F.interpolate(mode="linear", align_corners=False)`."""
  n = table.shape[0]
  if n == length:
    return table
  # float32 index arithmetic, as torch's CPU kernel does
  scale = np.float32(n / length)
  src = np.maximum((np.arange(length, dtype=np.float32) + np.float32(0.5)) * scale
                   - np.float32(0.5), np.float32(0.0))
  lo = np.floor(src).astype(np.int64)
  hi = np.minimum(lo + 1, n - 1)
  frac = jnp.asarray((src - lo.astype(np.float32))[:, None], table.dtype)
  return table[lo] * (1 - frac) + table[hi] * frac


def rel_index(q_len: int, k_len: int) -> np.ndarray:
  """(q_len, k_len) indices into a table of 2*max(q, k)-1 rows (torchvision's formula).

  Computed in float32 and truncated, exactly as torch does with `arange * ratio` then `.long()`.
  """
  f32 = np.float32
  q_ratio = f32(max(k_len / q_len, 1.0))
  k_ratio = f32(max(q_len / k_len, 1.0))
  q_pos = np.arange(q_len, dtype=f32)[:, None] * q_ratio
  k_pos = (np.arange(k_len, dtype=f32)[None, :] + f32(1.0 - k_len)) * k_ratio
  return (q_pos - k_pos).astype(np.int64)


def rel_pos_scores(q: jax.Array, q_grid: Grid, k_grid: Grid, tables: Sequence[jax.Array]
                   ) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Per-axis relative-position scores of the (unscaled) queries, class token excluded.

  q: (B, 1 + qt*qh*qw, n, d); tables: (rel_t, rel_h, rel_w), each (rows, d).
  Returns rel_t: (B, qt, qh, qw, n, kt), rel_h: (..., kh), rel_w: (..., kw).
  """
  b, _, n, d = q.shape
  r_q = q[:, 1:].reshape(b, *q_grid, n, d)
  out = []
  for axis, (table, ql, kl) in enumerate(zip(tables, q_grid, k_grid)):
    table = resize_table(table, 2 * max(ql, kl) - 1).astype(q.dtype)
    r = table[rel_index(ql, kl)]  # (ql, kl, d)
    spec = ["byhwnc,ykc->byhwnk", "bthwnc,hkc->bthwnk", "bthwnc,wkc->bthwnk"][axis]
    out.append(jnp.einsum(spec, r_q, r))
  return tuple(out)


def extend_with_rel_pos(q: jax.Array, k: jax.Array, q_grid: Grid, k_grid: Grid,
                        tables: Sequence[jax.Array] | None, scale: float
                        ) -> tuple[jax.Array, jax.Array]:
  """Folds the decomposed rel-pos term into one dot product (see the module docstring).

  q: (B, 1 + Nq, n, d) pooled queries, k: (B, 1 + Nk, n, d) pooled keys (heads third, the
  layout of the qkv GEMM's output and of cuDNN's attention: no transposes between them).
  Returns q_ext: (B, 1 + Nq, n, d + kt + kh + kw) = [s * q, rel_t, rel_h, rel_w] and
  k_ext: (B, 1 + Nk, n, d + kt + kh + kw) = [k, onehot(t_k), onehot(h_k), onehot(w_k)], so that
  q_ext . k_ext = s <q, k> + rel_t[q, t_k] + rel_h[q, h_k] + rel_w[q, w_k]; zeros on the class
  token's row and column. Without tables: (s * q, k).
  """
  if tables is None:
    return q * scale, k
  b, _, n, _ = q.shape
  rel = rel_pos_scores(q, q_grid, k_grid, tables)
  rel = jnp.concatenate([r.reshape(b, math.prod(q_grid), n, -1) for r in rel], axis=-1)
  q_ext = jnp.concatenate([q * scale, jnp.pad(rel, ((0, 0), (1, 0), (0, 0), (0, 0)))], -1)
  coords = np.unravel_index(np.arange(math.prod(k_grid)), k_grid)
  onehot = np.concatenate([np.eye(g, dtype=np.float32)[c] for g, c in zip(k_grid, coords)], 1)
  onehot = jnp.asarray(np.pad(onehot, ((1, 0), (0, 0))), k.dtype)[None, :, None]
  k_ext = jnp.concatenate([k, jnp.broadcast_to(onehot, (b, onehot.shape[1], n,
                                                        onehot.shape[-1]))], -1)
  return q_ext, k_ext


# --------------------------------------------------------------------------- modules


class Pool(nnx.Module):
  """Depthwise Conv3d pooling of q, k or v (heads share one conv), then LayerNorm.

  The class token skips the conv and is re-attached before the norm (torchvision order).
  """

  def __init__(self, head_dim: int, kernel: Sequence[int], stride: Sequence[int], *, eps: float,
               dtype, param_dtype, rngs: nnx.Rngs):
    self.conv = cpu_kernels.DepthwiseConv(head_dim, kernel, stride, [k // 2 for k in kernel],
                                     use_bias=False, dtype=dtype, param_dtype=param_dtype,
                                     rngs=rngs)
    self.norm = layers.layer_norm(head_dim, eps=eps, dtype=dtype, param_dtype=param_dtype,
                                  rngs=rngs)

  def __call__(self, cls: jax.Array, tokens: jax.Array, grid: Grid
               ) -> tuple[jax.Array, Grid]:
    """cls: (B, 1, n, d), tokens: (B, T*H*W, n, d) -> (B, 1 + T'*H'*W', n, d), new grid.

    The heads stay where the qkv GEMM put them: one conv over n*d channels with the kernel
    repeated per head, rather than a transpose to (B*n, T, H, W, d) and back.
    """
    b, _, n, d = tokens.shape
    tokens = self.conv(tokens.reshape(b, *grid, n * d), repeats=n)
    new_grid = tuple(tokens.shape[1:4])
    tokens = tokens.reshape(b, -1, n, d)
    return self.norm(jnp.concatenate([cls, tokens], axis=1)), new_grid


def split_tokens(x: jax.Array) -> Tokens:
  """(B, 1 + N, C) -> the token stream a program of this platform carries (see `Tokens`)."""
  return (x,) if compile_target.platform() == "cpu" else (x[:, :1], x[:, 1:])


def cls_and_grid(x: Tokens) -> tuple[jax.Array, jax.Array]:
  """A token stream -> (class token (B, 1, C), grid tokens (B, N, C))."""
  return (x[0][:, :1], x[0][:, 1:]) if len(x) == 1 else x


def join_tokens(x: Tokens) -> jax.Array:
  """A token stream -> (B, 1 + N, C)."""
  return x[0] if len(x) == 1 else jnp.concatenate(x, axis=1)


def tokens_like(x: Tokens, cls: jax.Array, tokens: jax.Array) -> Tokens:
  """The class token and grid tokens in the representation of `x`."""
  return (jnp.concatenate([cls, tokens], axis=1),) if len(x) == 1 else (cls, tokens)


def max_pool_skip(x: Tokens, grid: Grid, stride: Sequence[int]) -> tuple[Tokens, Grid]:
  """Shortcut pooling: MaxPool3d(kernel s+1 where s>1, stride s, padding k//2); cls passes.

  x: (B, 1 + T*H*W, C) as a token stream.
  """
  cls, tokens = cls_and_grid(x)
  b, _, c = tokens.shape
  kernel = [s + 1 if s > 1 else s for s in stride]
  pads = [(k // 2, k // 2) for k in kernel]
  tokens = jax.lax.reduce_window(tokens.reshape(b, *grid, c), -jnp.inf, jax.lax.max,
                                 (1, *kernel, 1), (1, *stride, 1), [(0, 0), *pads, (0, 0)])
  new_grid = tuple(tokens.shape[1:4])
  return tokens_like(x, cls, tokens.reshape(b, -1, c)), new_grid


def _linear(layer: nnx.Linear, x: Tokens) -> Tokens:
  """A linear layer on a token stream; on a (cls, grid) stream two GEMMs kept apart
  (`layers.linear_each`, the grid's first)."""
  if len(x) == 1:
    return (layer(x[0]),)
  grid, cls = layers.linear_each(layer, [x[1], x[0]])
  return cls[0], grid[0]


def drop_path_tokens(drop: layers.Dropout, x: Tokens) -> Tokens:
  """Stochastic depth of a token stream: one per-sample mask for all of its parts."""
  if len(x) == 1:
    return (drop(x[0]),)
  keep = drop(jnp.ones((x[0].shape[0], 1, 1), jnp.float32))  # (B, 1, 1): 0 or 1 / keep_prob
  return tuple((t * keep).astype(t.dtype) for t in x)


class MultiscaleAttention(nnx.Module):
  """Pooling attention with decomposed relative positions and residual pooling."""

  def __init__(self, cfg: MViTConfig, spec: BlockSpec, attn_dim: int, input_grid: Grid,
               *, rngs: nnx.Rngs):
    dtype, pdtype = cfg.dtype, cfg.param_dtype
    self.num_heads = spec.num_heads
    self.head_dim = attn_dim // spec.num_heads
    self.attn_dim = attn_dim
    self.residual_pool = cfg.residual_pool
    self.residual_with_cls_embed = cfg.residual_with_cls_embed
    self.attention = cfg.attention
    self.dtype = jnp.dtype(dtype)
    self.qkv = layers.linear(spec.input_channels, 3 * attn_dim, dtype=dtype, param_dtype=pdtype,
                             rngs=rngs)
    self.proj = layers.linear(attn_dim, attn_dim, dtype=dtype, param_dtype=pdtype, rngs=rngs)
    self.proj_dropout = layers.Dropout(cfg.attention_dropout, rngs=rngs)

    def pool(kernel, stride):
      if _prod(kernel) > 1 or _prod(stride) > 1:
        return Pool(self.head_dim, kernel, stride, eps=cfg.norm_eps, dtype=dtype,
                    param_dtype=pdtype, rngs=rngs)
      return None

    self.pool_q = pool(spec.kernel_q, spec.stride_q)
    self.pool_k = pool(spec.kernel_kv, spec.stride_kv)
    self.pool_v = pool(spec.kernel_kv, spec.stride_kv)

    self.rel_pos = cfg.rel_pos
    if cfg.rel_pos:
      # Table sizes exactly as torchvision (uses the H stride for both spatial tables).
      size = max(input_grid[1:])
      q_size = size // spec.stride_q[1] if len(spec.stride_q) else size
      kv_size = size // spec.stride_kv[1] if len(spec.stride_kv) else size
      spatial = 2 * max(q_size, kv_size) - 1
      temporal = 2 * input_grid[0] - 1
      init = layers.trunc_normal_02
      self.rel_pos_t = nnx.Param(init(rngs.params(), (temporal, self.head_dim), pdtype))
      self.rel_pos_h = nnx.Param(init(rngs.params(), (spatial, self.head_dim), pdtype))
      self.rel_pos_w = nnx.Param(init(rngs.params(), (spatial, self.head_dim), pdtype))

  def __call__(self, x: Tokens, grid: Grid) -> tuple[Tokens, Grid]:
    """x: (B, 1 + N, C_in) normalised -> (B, 1 + N', attn_dim), q grid (token streams)."""
    b = x[0].shape[0]
    heads = lambda t: t.reshape(b, t.shape[1], self.num_heads, self.head_dim)  # (B, N, n, d)
    if len(x) == 1:
      # One GEMM over every token; XLA:CPU fuses the slices that drop the class token into
      # the pooling convolutions' taps. (Two GEMMs cost 3-14% of a block's time here.)
      qkv = [heads(t) for t in layers.linear_columns(self.qkv, x[0], 3)]
      cls_qkv, grid_qkv = [t[:, :1] for t in qkv], [t[:, 1:] for t in qkv]
    else:
      # The class token and the token grid through the GEMM apart, so cuDNN's convolutions
      # read the grid's q, k and v where the GEMM wrote them.
      grid_qkv, cls_qkv = [[heads(t) for t in ts]
                           for ts in layers.linear_each(self.qkv, [x[1], x[0]], 3)]

    def pooled(pool, i):
      if pool is None:
        return jnp.concatenate([cls_qkv[i], grid_qkv[i]], axis=1), grid
      return pool(cls_qkv[i], grid_qkv[i], grid)

    q, q_grid = pooled(self.pool_q, 0)
    k, k_grid = pooled(self.pool_k, 1)
    v, _ = pooled(self.pool_v, 2)

    tables = (self.rel_pos_t[...], self.rel_pos_h[...], self.rel_pos_w[...]) if self.rel_pos \
        else None
    q_ext, k_ext = extend_with_rel_pos(q, k, q_grid, k_grid, tables, self.head_dim ** -0.5)
    with jax.named_scope("attention"):  # the AOT report finds each layer's kernel by it
      kind = attention.kernel(self.attention, q_ext.dtype, q_ext.shape[-1])
      if kind == "xla":
        # Heads second for the two batched GEMMs: XLA:CPU's batched dot wants its batch
        # dimensions leading (einsums over the heads-third layout cost ~10% of block 0).
        heads_second = lambda t: t.transpose(0, 2, 1, 3)  # (B, N, n, d) <-> (B, n, N, d)
        logits = jnp.einsum("bnqe,bnke->bnqk", heads_second(q_ext), heads_second(k_ext))
        probs = jax.nn.softmax(logits.astype(jnp.float32), axis=-1).astype(v.dtype)
        out = heads_second(jnp.einsum("bnqk,bnkd->bnqd", probs, heads_second(v)))
      else:
        out = attention.fused(q_ext, k_ext, v, scale=1.0, kernel=kind)  # (B, N, n, d)

    if self.residual_pool:
      if self.residual_with_cls_embed:
        out = out + q
      else:
        out = out + jnp.pad(q[:, 1:], ((0, 0), (1, 0), (0, 0), (0, 0)))
    out = out.reshape(b, -1, self.attn_dim)
    out = _linear(self.proj, (out,) if len(x) == 1 else (out[:, :1], out[:, 1:]))
    return tuple(map(self.proj_dropout, out)), q_grid


class MultiscaleBlock(nnx.Module):
  """norm1 -> attention (+ pooled shortcut) -> norm2 -> MLP, with stochastic depth."""

  def __init__(self, cfg: MViTConfig, spec: BlockSpec, input_grid: Grid, drop_rate: float,
               *, rngs: nnx.Rngs):
    dtype, pdtype = cfg.dtype, cfg.param_dtype
    self.proj_after_attn = cfg.proj_after_attn
    self.stride_q = spec.stride_q
    attn_dim = spec.output_channels if cfg.proj_after_attn else spec.input_channels
    norm = lambda c: layers.layer_norm(c, eps=cfg.norm_eps, dtype=dtype, param_dtype=pdtype,
                                       rngs=rngs)
    self.norm1 = norm(spec.input_channels)
    self.attn = MultiscaleAttention(cfg, spec, attn_dim, input_grid, rngs=rngs)
    self.norm2 = norm(attn_dim)
    self.mlp_in = layers.linear(attn_dim, 4 * attn_dim, dtype=dtype, param_dtype=pdtype,
                                rngs=rngs)
    self.mlp_out = layers.linear(4 * attn_dim, spec.output_channels, dtype=dtype,
                                 param_dtype=pdtype, rngs=rngs)
    self.mlp_dropout = layers.Dropout(cfg.attention_dropout, rngs=rngs)
    in_proj = spec.input_channels if cfg.proj_after_attn else attn_dim
    self.project = (layers.linear(in_proj, spec.output_channels, dtype=dtype,
                                  param_dtype=pdtype, rngs=rngs)
                    if spec.input_channels != spec.output_channels else None)
    self.drop_path = layers.drop_path(drop_rate, 3, rngs)

  def __call__(self, x: Tokens, grid: Grid) -> tuple[Tokens, Grid]:
    """x: (B, 1 + T*H*W, C_in) -> (B, 1 + T'*H'*W', C_out), new grid (token streams)."""
    each = lambda f, *xs: tuple(map(f, *xs))  # a per-token layer on every part of the stream
    # see its docstring: cuts XLA's fused gradient chains
    x = each(cpu_kernels.materialize_cotangent, x)
    x_norm = each(self.norm1, x)
    x_attn, new_grid = self.attn(x_norm, grid)
    if self.project is not None and self.proj_after_attn:
      x = _linear(self.project, x_norm)  # channel change on the *normalised* input
    if _prod(self.stride_q) > 1:
      x, _ = max_pool_skip(x, grid, self.stride_q)
    x = each(lambda a, b: cpu_kernels.materialize_cotangent(a + b), x,
             drop_path_tokens(self.drop_path, x_attn))
    x_norm = each(self.norm2, x)
    if self.project is not None and not self.proj_after_attn:
      x = _linear(self.project, x_norm)
    hidden = each(lambda t: self.mlp_dropout(layers.gelu(t)), _linear(self.mlp_in, x_norm))
    mlp = each(self.mlp_dropout, _linear(self.mlp_out, hidden))
    return each(jnp.add, x, drop_path_tokens(self.drop_path, mlp)), new_grid


def _rematerialised(block: MultiscaleBlock, x: Tokens, grid: Grid) -> tuple[Tokens, Grid]:
  """block(x, grid) keeping only its input for the backward pass (`nnx.remat`: RNG state in
  and out, so dropout draws the same masks when recomputed). The new grid is static shape
  arithmetic, not an array: it is read out of the traced call."""
  new_grid: list[Grid] = []

  def run(blk, x):
    y, g = blk(x, grid)
    new_grid.append(g)
    return y

  return nnx.remat(run)(block, x), new_grid[-1]


class MViT(nnx.Module):
  """Multiscale Vision Transformer v2. `video: (B, T, H, W, 3)` -> `(B, num_outputs)`."""

  def __init__(self, cfg: MViTConfig, *, rngs: nnx.Rngs):
    self.config = cfg
    dtype, pdtype = cfg.dtype, cfg.param_dtype
    self.dtype = jnp.dtype(dtype)
    c0 = cfg.blocks[0].input_channels
    self.conv_proj = cpu_kernels.Conv3d(3, c0, cfg.patch_kernel, cfg.patch_stride,
                                        cfg.patch_padding, dtype=dtype, param_dtype=pdtype,
                                        rngs=rngs)
    init = layers.trunc_normal_02
    self.class_token = nnx.Param(init(rngs.params(), (c0,), pdtype))
    grids = block_input_grids(cfg)
    if not cfg.rel_pos:  # MViTv1: separable absolute positions
      t, h, w = grids[0]
      self.spatial_pos = nnx.Param(init(rngs.params(), (h * w, c0), pdtype))
      self.temporal_pos = nnx.Param(init(rngs.params(), (t, c0), pdtype))
      self.class_pos = nnx.Param(init(rngs.params(), (c0,), pdtype))
    n = len(cfg.blocks)
    self.blocks = nnx.List([
        MultiscaleBlock(cfg, spec, grid, cfg.stochastic_depth * i / max(n - 1.0, 1.0), rngs=rngs)
        for i, (spec, grid) in enumerate(zip(cfg.blocks, grids))])
    c_last = cfg.blocks[-1].output_channels
    self.norm = layers.layer_norm(c_last, eps=cfg.norm_eps, dtype=dtype, param_dtype=pdtype,
                                  rngs=rngs)
    self.head_dropout = layers.Dropout(cfg.head_dropout, rngs=rngs)
    self.head = (layers.linear(c_last, cfg.num_outputs, dtype=dtype, param_dtype=pdtype,
                               rngs=rngs) if cfg.num_outputs else None)

  def features(self, video: jax.Array) -> jax.Array:
    """video: (B, T, H, W, 3) normalised float -> (B, C_last) normalised class token."""
    if video.ndim != 5 or video.shape[-1] != 3:
      raise ValueError(f"MViT expects video (B, T, H, W, 3), got shape {video.shape}")
    x = self.conv_proj(video.astype(self.dtype))
    b, t, h, w, c = x.shape
    x = x.reshape(b, t * h * w, c)  # t-major token order, as torchvision's flatten(2)
    cls = jnp.broadcast_to(self.class_token[...].astype(x.dtype), (b, 1, c))
    x = jnp.concatenate([cls, x], axis=1)
    if not self.config.rel_pos:
      pos = (self.temporal_pos[...][:, None, :] + self.spatial_pos[...][None]).reshape(-1, c)
      x = x + jnp.concatenate([self.class_pos[...][None], pos], 0).astype(x.dtype)
    grid, x = (t, h, w), split_tokens(x)
    for i, block in enumerate(self.blocks):
      if i == len(self.blocks) - 1:
        # The last block on the joined stream: apart, its grid tokens are dead (only the class
        # token is read), and XLA:GPU then fails to tile a GEMM of its backward pass under FSDP
        # ("Couldn't find output tile sizes", the paper step on 8 H100s, jax 0.10.2).
        x = (join_tokens(x),)
      with jax.named_scope(f"mvit_block{i}"):  # names each block in the compiled program
        x, grid = (_rematerialised(block, x, grid) if self.config.remat else block(x, grid))
    return self.norm(cls_and_grid(x)[0])[:, 0]

  def __call__(self, video: jax.Array) -> jax.Array:
    """video: (B, T, H, W, 3) normalised float -> (B, num_outputs) (or (B, C_last) headless)."""
    x = self.features(video)
    if self.head is None:
      return x
    return self.head(self.head_dropout(x))
