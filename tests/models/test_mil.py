"""Gated-attention MIL: masking, normalisation, shapes, and that attention can be learned."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from echoprime_jax.inference import attention_table as section_table
from echoprime_jax.models import mil


def _model(**kw):
  cfg = mil.MILConfig(num_sections=3, feature_dim=8 + 4, embed_dim=8, hidden_dim=16, out_dim=6,
                      identity_init=False, **kw)
  return mil.GatedAttentionMIL(cfg, rngs=nnx.Rngs(0))


def _features(rng, b, v, views):
  emb = rng.standard_normal((b, v, 8)).astype(np.float32)
  return section_table.video_features(jnp.asarray(emb), jnp.asarray(views), 4)


def test_attention_is_a_distribution_over_real_videos_only():
  rng = np.random.default_rng(0)
  feats = _features(rng, 2, 5, [[0, 1, 2, 3, 0], [1, 1, 2, -1, 0]])
  mask = jnp.asarray([[True] * 5, [True, True, True, False, False]])
  out, weights = _model()(feats, mask)
  assert out.shape == (2, 3, 6) and weights.shape == (2, 3, 5)
  np.testing.assert_allclose(np.asarray(weights).sum(-1), 1.0, rtol=1e-6)
  assert float(jnp.abs(weights[1, :, 3:]).max()) == 0.0
  # padding content does not leak: change the masked videos, nothing moves
  feats2 = feats.at[1, 3:].set(100.0)
  out2, weights2 = _model()(feats2, mask)
  np.testing.assert_allclose(out2[1], out[1], rtol=1e-6)
  np.testing.assert_allclose(weights2[1], weights[1], rtol=1e-6)


def test_study_without_videos_gives_zero_attention_not_nan():
  rng = np.random.default_rng(1)
  feats = _features(rng, 1, 3, [[0, 1, 2]])
  model = _model()
  out, weights = model(feats, jnp.zeros((1, 3), bool))
  assert np.isfinite(np.asarray(out)).all()
  assert float(jnp.abs(weights).max()) == 0.0
  grads = nnx.grad(lambda m: jnp.sum(m(feats, jnp.zeros((1, 3), bool))[0]))(model)
  assert all(np.isfinite(np.asarray(g)).all() for g in jax.tree.leaves(grads))


def test_uniform_attention_is_the_plain_mean_and_trains_the_projection_only():
  rng = np.random.default_rng(2)
  feats = _features(rng, 2, 4, [[0, 1, 2, 3], [3, 2, -1, 0]])
  mask = jnp.asarray([[True] * 4, [True, True, True, False]])
  model = _model(attention="uniform")
  out, weights = model(feats, mask)
  expect = np.where(np.asarray(mask)[:, None, :], 1 / np.asarray(mask).sum(1)[:, None, None], 0)
  np.testing.assert_allclose(np.asarray(weights), np.broadcast_to(expect, (2, 3, 4)), atol=1e-7)
  mean = (np.asarray(feats[..., :8]) * np.asarray(mask)[..., None]).sum(1) / np.asarray(
      mask).sum(1)[:, None]
  np.testing.assert_allclose(np.asarray(out[:, 0]), np.asarray(model.proj(jnp.asarray(mean))),
                             rtol=1e-5, atol=1e-6)
  grads = nnx.grad(lambda m: jnp.sum(m(feats, mask)[0] ** 2))(model)
  assert float(jnp.abs(grads.attn_w.kernel.value).max()) == 0.0
  assert float(jnp.abs(grads.proj.kernel.value).max()) > 0.0
  with pytest.raises(ValueError, match="gated or uniform"):
    _model(attention="max")


def test_attention_learns_which_view_matters_per_section():
  # Section s's target is the embedding of the video whose view is s: a few hundred Adam steps
  # on random studies must put most of section s's attention on view s.
  rng = np.random.default_rng(2)
  model = _model()
  model.proj = nnx.Linear(8, 8, use_bias=False, rngs=nnx.Rngs(1))
  model.proj.kernel.value = jnp.eye(8)  # identity head: the target lives in embedding space
  graphdef, params = nnx.split(model, nnx.Param)
  opt = optax.adam(1e-2)
  state = opt.init(params)

  def batch(n=32, v=4):
    views = np.stack([rng.permutation(4) for _ in range(n)])
    emb = rng.standard_normal((n, v, 8)).astype(np.float32)
    target = np.stack([emb[i, np.argsort(views[i])[:3]] for i in range(n)])  # (n, 3, 8)
    return (section_table.video_features(jnp.asarray(emb), jnp.asarray(views), 4),
            jnp.ones((n, v), bool), jnp.asarray(target), views)

  @jax.jit
  def step(params, state, feats, mask, target):
    def loss(p):
      out, _ = nnx.merge(graphdef, p)(feats, mask)
      return jnp.mean((out - target) ** 2)
    l, g = jax.value_and_grad(loss)(params)
    updates, state = opt.update(g, state, params)
    return optax.apply_updates(params, updates), state, l

  for _ in range(300):
    feats, mask, target, _ = batch()
    params, state, loss = step(params, state, feats, mask, target)
  feats, mask, _, views = batch(64)
  _, weights = nnx.merge(graphdef, params)(feats, mask)
  weights = np.asarray(weights)
  for s in range(3):
    on_view = weights[:, s][views == s]  # (64,) attention on the informative video
    assert on_view.mean() > 0.9, (s, on_view.mean())


def test_identity_init_passes_the_attended_mean_through():
  cfg = mil.MILConfig(num_sections=2, feature_dim=8 + 4, embed_dim=8, hidden_dim=16, out_dim=8)
  model = mil.GatedAttentionMIL(cfg, rngs=nnx.Rngs(0))
  rng = np.random.default_rng(4)
  feats = _features(rng, 3, 4, [[0, 1, 2, 3]] * 3)
  out, weights = model(feats, jnp.ones((3, 4), bool))
  expected = np.einsum("bsv,bvd->bsd", np.asarray(weights), np.asarray(feats)[..., :8])
  np.testing.assert_allclose(np.asarray(out), expected, rtol=1e-5, atol=1e-6)
  with pytest.raises(ValueError, match="identity_init"):
    mil.GatedAttentionMIL(dataclasses.replace(cfg, out_dim=6), rngs=nnx.Rngs(0))


def test_fixed_table_aggregator_matches_the_table_pooling():
  rng = np.random.default_rng(5)
  table = rng.uniform(size=(3, 4)).astype(np.float32)
  table[1, 2] = 0.0
  emb = rng.standard_normal((2, 5, 8)).astype(np.float32)
  views = np.asarray([[0, 1, 2, 3, 2], [2, -1, 1, 0, 0]])
  mask = np.asarray([[True] * 5, [True, True, True, False, False]])
  feats = section_table.video_features(jnp.asarray(emb), jnp.asarray(views), 4)
  out, weights = mil.FixedTableMIL(table, 8)(feats, jnp.asarray(mask))
  # attention: the table weight of each video's view, over the study's real videos, sums to 1
  np.testing.assert_allclose(np.asarray(weights)[0, 1], [table[1, 0], table[1, 1], 0.0,
                             table[1, 3], 0.0] / (table[1, [0, 1, 3]].sum()), rtol=1e-6)
  assert float(weights[1, :, 1].max()) == 0.0 and float(weights[1, :, 3:].max()) == 0.0
  np.testing.assert_allclose(np.asarray(weights).sum(-1), 1.0, rtol=1e-6)
  # the pooled direction is the fixed-table pooling's
  pooled = np.asarray(out) / np.linalg.norm(np.asarray(out), axis=-1, keepdims=True)
  reference = section_table.pool(jnp.asarray(emb), jnp.asarray(views), jnp.asarray(mask),
                                 jnp.asarray(table))
  np.testing.assert_allclose(pooled, np.asarray(reference), rtol=1e-5, atol=1e-6)
  assert not jax.tree.leaves(nnx.state(mil.FixedTableMIL(table, 8), nnx.Param))
