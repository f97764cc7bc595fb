"""Contrastive losses: reference values, same-study masking, chunked ring == dense (and grads)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from echoprime_jax import losses


def _embeddings(b=8, d=16, seed=0):
  rng = np.random.default_rng(seed)
  return (jnp.asarray(rng.normal(size=(b, d)), jnp.float32),
          jnp.asarray(rng.normal(size=(b, d)), jnp.float32))


def _reference_clip(v, t, scale, groups):
  """Plain NumPy InfoNCE with same-group off-diagonal pairs removed from the denominators."""
  v = v / np.linalg.norm(v, axis=1, keepdims=True)
  t = t / np.linalg.norm(t, axis=1, keepdims=True)
  logits = scale * v @ t.T
  n = len(v)
  total = 0.0
  for i in range(n):
    keep = [j for j in range(n) if j == i or groups[j] != groups[i]]
    row = logits[i, keep]
    col = logits[keep, i]
    total += np.log(np.exp(row).sum()) - logits[i, i] + np.log(np.exp(col).sum()) - logits[i, i]
  return total / (2 * n)


def test_clip_loss_matches_a_numpy_reference_with_study_masking():
  v, t = _embeddings()
  groups = jnp.array([0, 0, 1, 2, 2, 2, 3, 4])
  loss, aux = losses.clip_loss(v, t, jnp.log(10.0), groups)
  expected = _reference_clip(np.asarray(v, np.float64), np.asarray(t, np.float64), 10.0,
                             np.asarray(groups))
  np.testing.assert_allclose(float(loss), expected, rtol=1e-5)
  unmasked, _ = losses.clip_loss(v, t, jnp.log(10.0), jnp.arange(8))
  assert float(unmasked) != pytest.approx(float(loss))
  # perfectly aligned pairs with a large scale: loss -> 0, accuracy 1
  aligned, aux = losses.clip_loss(v, v, jnp.log(100.0))
  assert float(aligned) < 1e-3 and float(aux["accuracy"]) == 1.0


def test_clip_loss_with_invalid_pairs_equals_the_loss_over_the_valid_ones():
  v, t = _embeddings(seed=3)
  groups = jnp.array([0, 0, 1, 2, 2, 2, 3, 4])
  valid = jnp.array([True, False, True, True, True, False, True, False])
  loss, aux = losses.clip_loss(v, t, jnp.log(10.0), groups, valid)
  keep = np.asarray(valid)
  expected, expected_aux = losses.clip_loss(v[keep], t[keep], jnp.log(10.0), groups[keep])
  np.testing.assert_allclose(float(loss), float(expected), rtol=1e-5)
  np.testing.assert_allclose(float(aux["accuracy"]), float(expected_aux["accuracy"]))
  # the invalid rows' contents do not matter, and get no gradient
  g = jax.grad(lambda x: losses.clip_loss(x, t, jnp.log(10.0), groups, valid)[0])(v)
  assert float(jnp.abs(g[~keep]).max()) == 0.0
  assert float(jnp.abs(g[keep]).max()) > 0.0
  none_valid, _ = losses.clip_loss(v, t, jnp.log(10.0), groups, jnp.zeros((8,), bool))
  assert float(none_valid) == 0.0


def test_siglip_loss_prefers_aligned_pairs():
  v, t = _embeddings()
  good, _ = losses.siglip_loss(v, v, jnp.log(10.0), jnp.array(-10.0))
  bad, _ = losses.siglip_loss(v, t, jnp.log(10.0), jnp.array(-10.0))
  assert float(good) < float(bad)


def test_chunked_ring_loss_equals_the_dense_loss_and_its_gradients():
  mesh = Mesh(np.array(jax.devices()[:2]), ("data",))
  v, t = _embeddings(b=8)
  groups = jnp.array([0, 0, 1, 2, 3, 3, 4, 1])  # same-study pairs within and across devices
  shard = NamedSharding(mesh, P("data"))
  vs, ts, gs = (jax.device_put(x, shard) for x in (v, t, groups))
  log_scale = jnp.log(14.0)

  def dense(v, t, s):
    return losses.clip_loss(v, t, s, groups)[0]

  def chunked(v, t, s):
    return losses.chunked_clip_loss(v, t, s, gs, mesh)[0]

  d_val, d_grads = jax.value_and_grad(dense, argnums=(0, 1, 2))(v, t, log_scale)
  c_val, c_grads = jax.jit(jax.value_and_grad(chunked, argnums=(0, 1, 2)))(vs, ts, log_scale)
  np.testing.assert_allclose(float(c_val), float(d_val), rtol=1e-5)
  for a, b in zip(c_grads, d_grads):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6)
