"""Run NNX models under `jax.jit` in tests (eager op-by-op execution is far slower on CPU)."""

from __future__ import annotations

import jax
import numpy as np
from flax import nnx, traverse_util


def jit_apply(model: nnx.Module, *args, fn=None):
  """fn(model, *args) (default: model(*args)) compiled with the model's state as an argument."""
  graphdef, state = nnx.split(model)
  fn = fn or (lambda m, *a: m(*a))
  return jax.jit(lambda s, *a: fn(nnx.merge(graphdef, s), *a))(state, *args)


def jit_grad(model: nnx.Module, loss_fn, *args) -> dict:
  """Flat {path: np.ndarray} gradient of loss_fn(model, *args) w.r.t. the model's Params."""
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  grads = jax.jit(jax.grad(lambda p, *a: loss_fn(nnx.merge(graphdef, p, rest), *a)))(params, *args)
  return {p: np.asarray(v) for p, v in
          traverse_util.flatten_dict(nnx.to_pure_dict(grads)).items()}
