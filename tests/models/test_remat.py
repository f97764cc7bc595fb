"""remat="blocks" (configs/pretrain.py): recomputing each MViT block's and BERT layer's
activations in the backward pass changes memory, not the maths: the same loss and gradients,
in training mode (dropout and stochastic depth draw the same masks when recomputed), through
the trainer's own pattern (`nnx.value_and_grad` on a model merged inside `jax.jit`)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx, traverse_util

from echoprime_jax.models import bert, mvit


def _loss_and_grads(model, *inputs):
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)

  @jax.jit
  def step(params, rest):
    m = nnx.merge(graphdef, params, rest)
    value, grads = nnx.value_and_grad(lambda m: jnp.sum(m(*inputs) ** 2))(m)
    return value, grads

  value, grads = step(params, rest)
  return float(value), {k: np.asarray(v) for k, v in
                        traverse_util.flatten_dict(nnx.to_pure_dict(grads)).items()}


@pytest.mark.parametrize("tower", ["mvit", "bert"])
def test_remat_gives_the_same_loss_and_gradients(tower):
  rng = np.random.default_rng(0)
  if tower == "mvit":
    cfg = mvit.mvit_tiny(stochastic_depth=0.3, head_dropout=0.3)
    make = lambda remat: mvit.MViT(cfg.replace(remat=remat), rngs=nnx.Rngs(0))  # noqa: E731
    inputs = (jnp.asarray(rng.normal(size=(2, cfg.num_frames, *cfg.image_size, 3)),
                          jnp.float32),)
  else:
    cfg = bert.bert_tiny()  # dropout 0.1 on hidden states and attention probabilities
    make = lambda remat: bert.Bert(cfg.replace(remat=remat), rngs=nnx.Rngs(0))  # noqa: E731
    mask = np.ones((2, 24), np.int32)
    mask[1, 15:] = 0
    inputs = (jnp.asarray(rng.integers(1, 1000, (2, 24)), jnp.int32), jnp.asarray(mask))
  (loss0, g0), (loss1, g1) = (_loss_and_grads(make(remat), *inputs) for remat in (False, True))
  assert loss1 == pytest.approx(loss0, rel=1e-5)
  assert g0.keys() == g1.keys()
  for k in g0:
    scale = float(np.abs(g0[k]).max())
    np.testing.assert_allclose(g1[k], g0[k], rtol=0, atol=1e-5 * scale + 1e-9, err_msg=str(k))
  assert max(float(np.abs(v).max()) for v in g0.values()) > 1e-3  # real gradients
