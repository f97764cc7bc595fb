"""The attention kernel: XLA's own (einsum -> softmax -> einsum) or cuDNN's fused flash attention.

`kernel(choice, dtype, head_dim)` resolves a config's choice for the program being traced:
  "xla"    always XLA's path (the towers' CPU numerics: float32 softmax)
  "cudnn"  always cuDNN (GPU programs only; an unsupported shape is an error)
  "auto"   cuDNN when the program is for a GPU (`compile_target.platform()`) and the compute
           dtype is 16-bit and the head dim is one this GPU's cuDNN takes (up to 256 on
           Hopper, 128 before), XLA otherwise
  "fused"  the old name of "cudnn"

`fused` meets cuDNN's constraints in training so that every layer of both towers can
use it (jax 0.10, cuDNN 9):
  * q, k and v need one head dim, a multiple of 8: all are zero-padded to it (zeros add nothing
    to the logits; v's padded output columns are dropped). MViT's keys carry the folded
    rel-pos columns (`mvit.extend_with_rel_pos`), so its QK width is 118 or 132, not 96.
  * even sequence lengths: MViT's token counts (1 + T*H*W: the class token) are odd. An odd
    query count gets one zero row whose output is dropped; an odd key count one key that the
    kernel masks out by length (`key_value_seq_lengths`, the PADDING mask: no bias tensor of
    the attention's size, no materialised mask).
  * masks as key lengths: BERT's padding mask (right-padded reports) becomes per-example
    lengths.
  * batch-sharded operands: the kernel's partitioner splits the batch only, so under a mesh
    (`jax.set_mesh`) the inputs are pinned to the batch axes (`parallel.constrain_batch`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from echoprime_jax import parallel
from echoprime_jax.models import compile_target

CHOICES = ("auto", "xla", "cudnn", "xla_padded", "fused")


def kernel(choice: str, dtype, head_dim: int) -> str:
  """"cudnn", "xla" or "xla_padded" for a layer configured with `choice`, computing in `dtype`
  with `head_dim`-wide queries and keys. "xla_padded" runs `fused`'s padded inputs through
  XLA's kernel: the CPU tests of the padding."""
  if choice not in CHOICES:
    raise ValueError(f"attention must be one of {', '.join(CHOICES)}; got {choice!r}")
  if choice == "auto":
    wanted = compile_target.platform() == "gpu" and jnp.dtype(dtype).itemsize == 2
    return "cudnn" if wanted and _round_up(head_dim, 8) <= _cudnn_max_head_dim() else "xla"
  return "cudnn" if choice == "fused" else choice


def _cudnn_max_head_dim() -> int:
  """256 on Hopper and later, 128 before (jax's own rule, read from jax's check so that both
  agree; a host without a CUDA jax answers 128)."""
  try:
    from jax._src.cudnn import fused_attention_stablehlo as cudnn_checks
    return 256 if cudnn_checks.check_compute_capability("9.0") else 128
  except Exception:  # noqa: BLE001 - no CUDA jax, or jax moved its check: the safe limit
    return 128


def _round_up(n: int, multiple: int) -> int:
  return -(-n // multiple) * multiple


def _pad_axis(x: jax.Array, axis: int, size: int) -> jax.Array:
  if x.shape[axis] == size:
    return x
  widths = [(0, 0)] * x.ndim
  widths[axis] = (0, size - x.shape[axis])
  return jnp.pad(x, widths)


def fused(q: jax.Array, k: jax.Array, v: jax.Array, *, scale: float,
          kv_lengths: jax.Array | None = None, kernel: str = "cudnn") -> jax.Array:
  """softmax(scale * q k^T) v by cuDNN's fused kernel, padded to its constraints (module doc).

  q: (B, T, N, Hq), k: (B, S, N, Hq), v: (B, S, N, Hv); kv_lengths: (B,) valid keys per
  example (a right-padded mask), None = all S. -> (B, T, N, Hv).
  kernel="xla_padded" runs the same padded program through XLA (any host).
  """
  q, k, v = (parallel.constrain_batch(x) for x in (q, k, v))
  b, t, _, hq = q.shape
  s, hv = k.shape[1], v.shape[-1]
  width = _round_up(max(hq, hv), 8)
  t2, s2 = _round_up(t, 2), _round_up(s, 2)
  q2 = _pad_axis(_pad_axis(q, 3, width), 1, t2)
  k2 = _pad_axis(_pad_axis(k, 3, width), 1, s2)
  v2 = _pad_axis(_pad_axis(v, 3, width), 1, s2)
  if kv_lengths is None and s2 != s:
    kv_lengths = jnp.full((b,), s, jnp.int32)
  out = jax.nn.dot_product_attention(
      q2, k2, v2, scale=scale, implementation="xla" if kernel == "xla_padded" else "cudnn",
      key_value_seq_lengths=None if kv_lengths is None else kv_lengths.astype(jnp.int32))
  return out[:, :t, :, :hv]
