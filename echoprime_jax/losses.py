"""Contrastive losses for video-report pretraining.

All take unnormalised embeddings `video (B, D)`, `text (B, D)` of the *global* batch (under
jit with sharded inputs XLA gathers what it needs), plus `groups (B,)` int: pairs with the same
group id (videos of one study share one report) are not negatives of each other.

* `clip_loss`: symmetric InfoNCE (EchoPrime / CLIP). Same-group off-diagonal logits are masked
  out of both softmaxes; the diagonal is the positive.
* `siglip_loss`: pairwise sigmoid loss (SigLIP); same-group pairs are positives.
* `chunked_clip_loss`: the same value and gradients as `clip_loss`, computed under `shard_map`
  with text chunks travelling round the device ring (`ppermute`), so no device ever holds more
  than a (B/n, B/n) block of logits: memory per device O(B^2 / n^2) instead of O(B^2).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

NEG_INF = -1e9  # finite: keeps gradients clean where a whole row could be masked


def l2_normalize(x: jax.Array, eps: float = 1e-6) -> jax.Array:
  x = x.astype(jnp.float32)
  return x * jax.lax.rsqrt(jnp.maximum(jnp.sum(x * x, -1, keepdims=True), eps * eps))


def clip_loss(video: jax.Array, text: jax.Array, log_scale: jax.Array,
              groups: jax.Array | None = None, valid: jax.Array | None = None
              ) -> tuple[jax.Array, dict]:
  """Symmetric InfoNCE. log_scale: scalar, logits = exp(log_scale) * cos. -> (loss, aux).

  valid (B,) bool: pairs that take part (False: padding, or a study without this section);
  the loss is the mean over valid pairs, and invalid ones are nobody's negatives.
  """
  v, t = l2_normalize(video), l2_normalize(text)
  logits = jnp.exp(log_scale) * (v @ t.T)
  n = logits.shape[0]
  eye = jnp.eye(n, dtype=bool)
  if groups is not None:
    same = groups[:, None] == groups[None, :]
    logits = jnp.where(same & ~eye, NEG_INF, logits)
  if valid is not None:
    logits = jnp.where((valid[:, None] & valid[None, :]) | eye, logits, NEG_INF)
    weight = valid.astype(jnp.float32)
  else:
    weight = jnp.ones((n,), jnp.float32)
  count = jnp.maximum(weight.sum(), 1.0)
  diag = jnp.diagonal(logits)
  v2t = (jax.nn.logsumexp(logits, axis=1) - diag) * weight
  t2v = (jax.nn.logsumexp(logits, axis=0) - diag) * weight
  loss = 0.5 * (v2t.sum() + t2v.sum()) / count
  accuracy = ((jnp.argmax(logits, axis=1) == jnp.arange(n)) * weight).sum() / count
  return loss, {"v2t_loss": v2t.sum() / count, "t2v_loss": t2v.sum() / count,
                "accuracy": accuracy}


def siglip_loss(video: jax.Array, text: jax.Array, log_scale: jax.Array, bias: jax.Array,
                groups: jax.Array | None = None) -> tuple[jax.Array, dict]:
  """Sigmoid loss: -mean over pairs of log sigmoid(label * (scale * cos + bias)), summed over
  texts per video as in SigLIP (i.e. mean over videos of the row sum)."""
  v, t = l2_normalize(video), l2_normalize(text)
  logits = jnp.exp(log_scale) * (v @ t.T) + bias
  n = logits.shape[0]
  positive = jnp.eye(n, dtype=bool)
  if groups is not None:
    positive = groups[:, None] == groups[None, :]
  labels = jnp.where(positive, 1.0, -1.0)
  loss = -jnp.sum(jax.nn.log_sigmoid(labels * logits)) / n
  return loss, {"positive_logit": jnp.sum(jnp.where(positive, logits, 0)) / jnp.sum(positive)}


def chunked_clip_loss(video: jax.Array, text: jax.Array, log_scale: jax.Array,
                      groups: jax.Array, mesh: jax.sharding.Mesh,
                      axis: str | tuple[str, ...] = "data") -> tuple[jax.Array, dict]:
  """`clip_loss` over a batch sharded along `axis` of `mesh`, block by block round the ring.

  Each device keeps its video rows; text blocks (with their group ids and their running
  column log-sum-exp) move one device per step. After n steps every row and every column has
  seen the whole batch. Autodiff goes through `ppermute`, so gradients are exact.
  """
  from jax.sharding import PartitionSpec as P

  axes = axis if isinstance(axis, tuple) else (axis,)
  n = 1
  for a in axes:
    n *= mesh.shape[a]
  spec = P(axes)

  @functools.partial(jax.shard_map, mesh=mesh, in_specs=(spec, spec, P(), spec),
                     out_specs=(P(), P(), P()), check_vma=False)
  def ring(v, t, log_scale, g):
    v, t = l2_normalize(v), l2_normalize(t)
    scale = jnp.exp(log_scale)
    me = jax.lax.axis_index(axes)
    b = v.shape[0]
    perm = [(i, (i + 1) % n) for i in range(n)]
    row_lse = jnp.full((b,), -jnp.inf)
    col_lse = jnp.full((b,), -jnp.inf)  # travels with the text block
    diag = jnp.sum(v * t, -1) * scale  # local positives (the diagonal blocks are local)
    owner = me  # which device's text block is here now
    t_groups = g  # the group ids of the text block here now
    local = jnp.arange(b)
    for step in range(n):
      logits = scale * (v @ t.T)
      diag_mask = (owner == me) & (local[:, None] == local[None, :])
      same_group = g[:, None] == t_groups[None, :]
      logits = jnp.where(same_group & ~diag_mask, NEG_INF, logits)
      row_lse = jnp.logaddexp(row_lse, jax.nn.logsumexp(logits, axis=1))
      col_lse = jnp.logaddexp(col_lse, jax.nn.logsumexp(logits, axis=0))
      if step + 1 < n:
        t, t_groups, col_lse = jax.lax.ppermute((t, t_groups, col_lse), axes, perm)
        owner = (owner - 1) % n
    # After n - 1 moves each text block sits one device behind its home: bring it home.
    if n > 1:
      col_lse = jax.lax.ppermute(col_lse, axes, perm)
    v2t = jax.lax.pmean(jnp.mean(row_lse - diag), axes)
    t2v = jax.lax.pmean(jnp.mean(col_lse - diag), axes)
    return 0.5 * (v2t + t2v), v2t, t2v

  loss, v2t, t2v = ring(video, text, log_scale, groups)
  return loss, {"v2t_loss": v2t, "t2v_loss": t2v}
