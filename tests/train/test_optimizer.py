"""AdamW + schedule + clipping + masked decay + per-tower learning rates + accumulation."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from echoprime_jax.train import optimizer


def _cfg(**kw):
  c = dict(learning_rate=1e-2, warmup_steps=2, end_lr_fraction=0.0, weight_decay=0.1,
           b1=0.9, b2=0.999, eps=1e-8, grad_clip=0.0, accumulate=1,
           lr_multipliers=dict(video=1.0, text=1.0))
  c.update(kw)
  return ml_collections.ConfigDict(c)


def _params():
  return {"video": {"proj": {"kernel": jnp.ones((3, 2)), "bias": jnp.ones((2,))},
                    "norm": {"scale": jnp.ones((2,))}},
          "text": {"word_embedding": {"embedding": jnp.ones((5, 2))},
                   "proj": {"kernel": jnp.ones((2, 2))}},
          "log_scale": jnp.asarray(2.0)}


def test_decay_applies_to_matrices_only():
  mask = optimizer.decay_mask(_params())
  assert mask["video"]["proj"]["kernel"] and mask["text"]["proj"]["kernel"]
  assert not mask["video"]["proj"]["bias"]
  assert not mask["video"]["norm"]["scale"]
  assert not mask["text"]["word_embedding"]["embedding"]
  assert not mask["log_scale"]


def test_warmup_then_cosine_to_the_end_fraction():
  s = optimizer.make_schedule(_cfg(learning_rate=1.0, warmup_steps=4, end_lr_fraction=0.1), 14)
  np.testing.assert_allclose([float(s(i)) for i in (0, 2, 4, 9, 14)],
                             [0.0, 0.5, 1.0, 0.1 + 0.9 * 0.5, 0.1], rtol=1e-6)


def _one_update(cfg, grads, steps=3):
  params = _params()
  tx, _ = optimizer.make_optimizer(cfg, params, total_steps=10)
  state = tx.init(params)
  for _ in range(steps):
    updates, state = tx.update(grads, state, params)
    params = optax.apply_updates(params, updates)
  return params


def test_tower_multipliers_scale_or_freeze_a_tower():
  grads = jax.tree.map(jnp.ones_like, _params())
  base = _one_update(_cfg(weight_decay=0.0), grads)
  half = _one_update(_cfg(weight_decay=0.0, lr_multipliers=dict(video=0.5, text=0.0)), grads)
  moved = lambda p: jax.tree.map(lambda a, b: a - b, p, _params())
  d_base, d_half = moved(base), moved(half)
  np.testing.assert_allclose(d_half["video"]["proj"]["kernel"],
                             0.5 * d_base["video"]["proj"]["kernel"], atol=1e-6)  # 1 - x
  assert float(jnp.abs(d_base["text"]["proj"]["kernel"]).min()) > 0
  for leaf in jax.tree.leaves(d_half["text"]):  # frozen: not even weight decay moves it
    assert float(jnp.abs(leaf).max()) == 0.0
  np.testing.assert_allclose(d_half["log_scale"], d_base["log_scale"])  # not listed: x1


def test_all_multipliers_one_adds_no_transform():
  params = _params()
  tx1, _ = optimizer.make_optimizer(_cfg(), params, 10)
  tx2, _ = optimizer.make_optimizer(_cfg(lr_multipliers={}), params, 10)
  assert jax.tree.structure(tx1.init(params)) == jax.tree.structure(tx2.init(params))


def test_unknown_tower_multiplier_is_an_error():
  with pytest.raises(ValueError, match="unknown parameter groups.*'vision'"):
    optimizer.make_optimizer(_cfg(lr_multipliers=dict(vision=0.1)), _params(), 10)


@pytest.mark.parametrize("clip", [0.0, 1.0])
def test_clipping_keeps_one_huge_gradient_from_dominating_adams_momentum(clip):
  # Step 1: a spike (global norm 200); step 2: an ordinary gradient the other way (norm 1).
  # Clipped, the spike enters the momentum at norm 1 and step 2 follows the new gradient;
  # unclipped, momentum still points along the spike.
  params = {"video": {"w": jnp.zeros((2, 2))}}
  tx, _ = optimizer.make_optimizer(_cfg(grad_clip=clip, weight_decay=0.0, warmup_steps=0,
                                        lr_multipliers={}), params, 10)
  state = tx.init(params)
  _, state = tx.update({"video": {"w": jnp.full((2, 2), 100.0)}}, state, params)
  updates, _ = tx.update({"video": {"w": jnp.full((2, 2), -0.5)}}, state, params)
  step2 = np.asarray(updates["video"]["w"])
  assert (step2 > 0).all() if clip else (step2 < 0).all()


def test_accumulation_equals_one_step_on_the_mean_gradient():
  g1 = jax.tree.map(lambda p: 0.3 * jnp.ones_like(p), _params())
  g2 = jax.tree.map(lambda p: -0.1 * jnp.ones_like(p) + 0.05, _params())
  mean = jax.tree.map(lambda a, b: (a + b) / 2, g1, g2)
  params = _params()
  tx, _ = optimizer.make_optimizer(_cfg(accumulate=2, warmup_steps=0), params, 10)
  state = tx.init(params)
  p = params
  for g in (g1, g2):
    updates, state = tx.update(g, state, p)
    p = optax.apply_updates(p, updates)
  tx1, _ = optimizer.make_optimizer(_cfg(warmup_steps=0), params, 10)
  updates, _ = tx1.update(mean, tx1.init(params), params)
  expected = optax.apply_updates(params, updates)
  assert float(jnp.abs(p["video"]["proj"]["kernel"] - 1).min()) > 1e-3  # it did move
  for a, b in zip(jax.tree.leaves(p), jax.tree.leaves(expected)):
    np.testing.assert_allclose(a, b, rtol=1e-6)
