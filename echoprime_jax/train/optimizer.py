"""Optax optimizer for every stage: AdamW, warmup + cosine, clipping, masked decay, per-tower LR.

  optimizer, schedule = make_optimizer(cfg.optim, params, total_steps)

cfg fields (ml_collections): learning_rate (peak), warmup_steps, end_lr_fraction, weight_decay,
b1, b2, eps, grad_clip (global norm; 0 = off), accumulate (micro-batches per update; 1 = off),
lr_multipliers ({top-level parameter group: factor}, e.g. {"text": 0.1}; 0 freezes a group).

Weight decay applies to matrices and convolution kernels only: parameters with fewer than 2
dimensions (norm scales, biases, the temperature) and embedding tables (paths containing
"embedding", "pos", "token") are excluded, as in BERT/CLIP practice.
"""

from __future__ import annotations

from typing import Any

import jax
import optax

_NO_DECAY_WORDS = ("embedding", "pos", "token")


def _path_str(path) -> str:
  return "/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path)


def decay_mask(params: Any) -> Any:
  """True where weight decay applies (see module docstring)."""
  def rule(path, x):
    name = _path_str(path).lower()
    return x.ndim >= 2 and not any(w in name for w in _NO_DECAY_WORDS)
  return jax.tree_util.tree_map_with_path(rule, params)


def group_labels(params: Any) -> Any:
  """The top-level key of each parameter ("video", "text", "log_scale", ...)."""
  return jax.tree_util.tree_map_with_path(lambda path, _: _path_str(path[:1]), params)


def make_schedule(cfg: Any, total_steps: int) -> optax.Schedule:
  warmup = min(int(cfg.warmup_steps), max(total_steps - 1, 0))
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=float(cfg.learning_rate), warmup_steps=warmup,
      decay_steps=max(total_steps, warmup + 1),
      end_value=float(cfg.learning_rate) * float(cfg.get("end_lr_fraction", 0.0)))


def make_optimizer(cfg: Any, params: Any, total_steps: int
                   ) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """-> (optimizer, learning-rate schedule). `params` may be abstract (shapes only)."""
  schedule = make_schedule(cfg, total_steps)
  adamw = optax.adamw(schedule, b1=float(cfg.get("b1", 0.9)), b2=float(cfg.get("b2", 0.999)),
                      eps=float(cfg.get("eps", 1e-8)), weight_decay=float(cfg.weight_decay),
                      mask=decay_mask(params))
  chain = []
  if float(cfg.get("grad_clip", 0.0)) > 0:
    chain.append(optax.clip_by_global_norm(float(cfg.grad_clip)))
  chain.append(adamw)
  multipliers = dict(cfg.get("lr_multipliers", {}) or {})
  labels = group_labels(params)
  groups = set(jax.tree.leaves(labels))
  unknown = set(multipliers) - groups
  if unknown:
    raise ValueError(f"lr_multipliers for unknown parameter groups {sorted(unknown)}; "
                     f"groups: {sorted(groups)}")
  if any(float(m) != 1.0 for m in multipliers.values()):
    chain.append(optax.multi_transform(
        {g: (optax.set_to_zero() if multipliers.get(g, 1.0) == 0
             else optax.scale(float(multipliers.get(g, 1.0)))) for g in groups}, labels))
  tx = optax.chain(*chain)
  accumulate = int(cfg.get("accumulate", 1))
  if accumulate > 1:
    tx = optax.MultiSteps(tx, every_k_schedule=accumulate)
  return tx, schedule
