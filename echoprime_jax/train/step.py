"""The optimizer step every stage shares: pure, state in and state out.

The state is a plain pytree: {"step", "params", "rest" (NNX RNG counters and keys for dropout
and stochastic depth), "opt_state"}. A stage supplies what differs (`stage.Stage`): how a batch
becomes model inputs, the loss, and a constraint on the updated parameters (CLIP's temperature
clamp). The trainer jits it with explicit shardings and donates the old state.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax
from flax import nnx


def init_state(create_model: Callable[[], Any], tx: optax.GradientTransformation) -> dict:
  """A fresh train state (jit it with out_shardings to create it already sharded)."""
  _, params, rest = nnx.split(create_model(), nnx.Param, ...)
  return {"step": jnp.zeros((), jnp.int32), "params": params, "rest": rest,
          "opt_state": tx.init(params)}


def train_step(state: dict, batch: dict, *, graphdef, tx: optax.GradientTransformation,
               schedule: optax.Schedule, prepare: Callable[[dict], dict],
               loss: Callable[[Any, dict], tuple[jax.Array, dict]],
               constrain: Callable[[Any], tuple[Any, dict]] | None = None
               ) -> tuple[dict, dict]:
  """One update on a global batch -> (new state, metrics: loss, grad_norm, learning_rate and
  the loss' and constraint's own)."""
  inputs = prepare(batch)
  model = nnx.merge(graphdef, state["params"], state["rest"])
  # nnx.value_and_grad: gradients for the Params; RNG counters (dropout, stochastic depth)
  # advance inside the model and are read back below.
  (value, aux), grads = nnx.value_and_grad(lambda m: loss(m, inputs), has_aux=True)(model)
  _, _, rest = nnx.split(model, nnx.Param, ...)
  updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
  params = optax.apply_updates(state["params"], updates)
  extra: dict = {}
  if constrain is not None:
    params, extra = constrain(params)
  metrics = {"loss": value, "grad_norm": optax.global_norm(grads),
             "learning_rate": schedule(state["step"]), **extra, **aux}
  return {"step": state["step"] + 1, "params": params, "rest": rest,
          "opt_state": opt_state}, metrics


def jit_train_step(graphdef, tx: optax.GradientTransformation, schedule: optax.Schedule, *,
                   prepare, loss, constrain=None, state_shardings=None, batch_sharding=None):
  """`train_step` of a stage's parts, jitted with explicit shardings (None: let XLA choose),
  the old state donated."""
  step = functools.partial(train_step, graphdef=graphdef, tx=tx, schedule=schedule,
                           prepare=prepare, loss=loss, constrain=constrain)
  if state_shardings is None:
    return jax.jit(step, donate_argnums=(0,))
  return jax.jit(step, in_shardings=(state_shardings, batch_sharding),
                 out_shardings=(state_shardings, None), donate_argnums=(0,))


def flops_per_step(compiled) -> float:
  """FLOPs of one compiled step by XLA's cost analysis (0 where it gives none)."""
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float(cost.get("flops", 0.0)) if cost else 0.0
