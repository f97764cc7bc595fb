"""Probes of frozen embeddings: KNN and linear (ridge / logistic), cross-validated by patient,
with bootstrap confidence intervals.

`X (N, D)` embeddings, `y (N,)` target (NaN rows dropped), `groups (N,)` patient ids: no patient
is in the training and the test fold at once. Regression: KNN mean of the k nearest (cosine)
training studies, and ridge with its penalty chosen by an inner grouped CV; metrics MAE and R^2
against predicting the training mean. Binary: KNN positive fraction and L2-regularised logistic
regression (penalty by inner CV); AUC and AUPRC against the prevalence. Every metric comes with
a bootstrap 95% interval over the out-of-fold predictions.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import optimize

from echoprime_jax.evaluation.bootstrap import resampled_studies

PENALTIES = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0, 1000.0)


def group_folds(groups: np.ndarray, folds: int, seed: int = 0) -> np.ndarray:
  """(N,) fold index per row; every group's rows share one fold (groups shuffled, dealt in turn
  by size so folds are balanced)."""
  uniq, inverse, counts = np.unique(groups, return_inverse=True, return_counts=True)
  order = np.random.default_rng(seed).permutation(len(uniq))
  order = order[np.argsort(-counts[order], kind="stable")]
  fold_of_group, load = np.zeros(len(uniq), np.int64), np.zeros(folds)
  for g in order:
    f = int(np.argmin(load))
    fold_of_group[g] = f
    load[f] += counts[g]
  return fold_of_group[inverse]


def _standardise(train: np.ndarray, test: np.ndarray):
  mu, sd = train.mean(0), train.std(0) + 1e-6
  return (train - mu) / sd, (test - mu) / sd


def ridge_fit_predict(x, y, x_test, penalty: float) -> np.ndarray:
  x, x_test = _standardise(x, x_test)
  mean = y.mean()
  d = x.shape[1]
  w = np.linalg.solve(x.T @ x + penalty * len(x) * np.eye(d), x.T @ (y - mean))
  return x_test @ w + mean


def logistic_fit_predict(x, y, x_test, penalty: float) -> np.ndarray:
  x, x_test = _standardise(x, x_test)
  xb = np.concatenate([x, np.ones((len(x), 1))], 1)

  def loss(w):
    z = xb @ w
    nll = np.mean(np.logaddexp(0, z) - y * z)
    grad = xb.T @ (1 / (1 + np.exp(-z)) - y) / len(y)
    reg = 0.5 * penalty * np.sum(w[:-1] ** 2)
    return nll + reg, grad + penalty * np.concatenate([w[:-1], [0.0]])

  w = optimize.minimize(loss, np.zeros(xb.shape[1]), jac=True, method="L-BFGS-B").x
  return 1 / (1 + np.exp(-(np.concatenate([x_test, np.ones((len(x_test), 1))], 1) @ w)))


def knn_predict(x, y, x_test, k: int) -> np.ndarray:
  a = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
  b = x_test / np.maximum(np.linalg.norm(x_test, axis=1, keepdims=True), 1e-12)
  top = np.argsort(-(b @ a.T), axis=1)[:, :min(k, len(a))]
  return y[top].mean(1)


def auc(scores: np.ndarray, labels: np.ndarray) -> float:
  """ROC AUC by the rank-sum formula (ties share ranks); NaN if one class is missing."""
  from scipy.stats import rankdata
  pos, neg = labels == 1, labels == 0
  if not pos.any() or not neg.any():
    return math.nan
  ranks = rankdata(scores)
  return float((ranks[pos].sum() - pos.sum() * (pos.sum() + 1) / 2) / (pos.sum() * neg.sum()))


def auprc(scores: np.ndarray, labels: np.ndarray) -> float:
  """Average precision over the distinct score thresholds (tied scores form one step, so a
  constant score gets the prevalence)."""
  if labels.sum() == 0:
    return math.nan
  order = np.argsort(-scores, kind="stable")
  s, hits = scores[order], (labels[order] == 1).astype(np.float64)
  last = np.r_[np.flatnonzero(np.diff(s) != 0), len(s) - 1]  # end of each tie block
  tp = np.cumsum(hits)[last]
  precision = tp / (last + 1)
  recall_gain = np.diff(np.r_[0.0, tp]) / hits.sum()
  return float((precision * recall_gain).sum())


def _metrics(kind: str, y: np.ndarray, pred: np.ndarray) -> dict[str, float]:
  if kind == "regression":
    mae = float(np.mean(np.abs(pred - y)))
    ss = float(np.sum((y - y.mean()) ** 2))
    return {"mae": mae, "r2": 1 - float(np.sum((y - pred) ** 2)) / ss if ss > 0 else math.nan}
  return {"auc": auc(pred, y), "auprc": auprc(pred, y)}


def bootstrap(kind: str, y: np.ndarray, pred: np.ndarray, n: int = 1000, seed: int = 0
              ) -> dict[str, tuple[float, float]]:
  draws: dict[str, list[float]] = {}
  for i in resampled_studies(len(y), n, seed):  # a row per study (the probe's level)
    for k, v in _metrics(kind, y[i], pred[i]).items():
      if not math.isnan(v):
        draws.setdefault(k, []).append(v)
  return {k: (float(np.percentile(v, 2.5)), float(np.percentile(v, 97.5)))
          for k, v in draws.items()}


def _inner_penalty(kind, x, y, groups, folds: int) -> float:
  inner = group_folds(groups, folds, seed=1)
  best, best_score = PENALTIES[0], -math.inf
  for penalty in PENALTIES:
    pred = np.zeros(len(y))
    for f in range(folds):
      tr, te = inner != f, inner == f
      if te.sum() == 0 or tr.sum() < 2 or (kind == "binary" and len(np.unique(y[tr])) < 2):
        continue
      fit = ridge_fit_predict if kind == "regression" else logistic_fit_predict
      pred[te] = fit(x[tr], y[tr], x[te], penalty)
    if kind == "regression":
      score = -np.mean(np.abs(pred - y))
    else:  # negative log loss
      p = np.clip(pred, 1e-7, 1 - 1e-7)
      score = np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))
    if score > best_score:
      best, best_score = penalty, score
  return best


def _fit_predict(kind: str, x_tr, y_tr, groups_tr, x_te, k: int, inner_folds: int
                 ) -> tuple[dict[str, np.ndarray], float]:
  """Probes fitted on the training rows -> ({"knn", "linear", "baseline"} predictions of the
  test rows, the linear probe's penalty, chosen by a grouped inner CV on the training rows)."""
  penalty = _inner_penalty(kind, x_tr, y_tr, groups_tr, inner_folds)
  fit = ridge_fit_predict if kind == "regression" else logistic_fit_predict
  # baseline: the training mean (regression); for binary targets one constant score for
  # everybody (AUC 0.5, AUPRC = prevalence)
  return {"knn": knn_predict(x_tr, y_tr, x_te, k), "linear": fit(x_tr, y_tr, x_te, penalty),
          "baseline": np.full(len(x_te), y_tr.mean() if kind == "regression" else 0.5)}, penalty


def _clean(x, y, groups, kind: str):
  keep = ~np.isnan(y)
  x, y, groups = np.asarray(x, np.float64)[keep], np.asarray(y, np.float64)[keep], groups[keep]
  if kind not in ("regression", "binary"):
    raise ValueError(f"kind must be regression or binary, got {kind!r}")
  if kind == "binary" and not set(np.unique(y)) <= {0.0, 1.0}:
    raise ValueError("a binary target must be 0 / 1")
  return x, y, groups


def _scored(out: dict, kind: str, y: np.ndarray, preds: dict, bootstraps: int, seed: int
            ) -> dict:
  out["predictions"] = {"y": y, **preds}
  for name in ("knn", "linear", "baseline"):
    m = _metrics(kind, y, preds[name])
    ci = bootstrap(kind, y, preds[name], bootstraps, seed)
    out[name] = {**m, **{f"{key}_ci": v for key, v in ci.items()}}
  return out


def probe(x: np.ndarray, y: np.ndarray, groups: np.ndarray, kind: str, folds: int = 5,
          k: int = 10, seed: int = 0, bootstraps: int = 1000) -> dict:
  """Out-of-fold KNN and linear probes; -> {"knn": {...}, "linear": {...}, "baseline": {...},
  "n", "folds", "predictions": {...}} (metrics with "<name>_ci" intervals)."""
  x, y, groups = _clean(x, y, groups, kind)
  if len(np.unique(groups)) < folds:
    raise ValueError(f"{len(np.unique(groups))} patients: fewer than the {folds} folds")
  fold = group_folds(groups, folds, seed)
  preds = {"knn": np.zeros(len(y)), "linear": np.zeros(len(y)), "baseline": np.zeros(len(y))}
  penalties = []
  for f in range(folds):
    tr, te = fold != f, fold == f
    fold_preds, penalty = _fit_predict(kind, x[tr], y[tr], groups[tr], x[te], k,
                                       min(folds, 3))
    for name, p in fold_preds.items():
      preds[name][te] = p
    penalties.append(penalty)
  return _scored({"n": int(len(y)), "folds": folds, "kind": kind, "k": k,
                  "linear_penalties": penalties}, kind, y, preds, bootstraps, seed)


def probe_held_out(x_train, y_train, groups_train, x_test, y_test, groups_test, kind: str,
                   k: int = 10, seed: int = 0, bootstraps: int = 1000,
                   inner_folds: int = 3) -> dict:
  """Probes fitted on a training split, scored on a held-out split (a dataset's own split,
  e.g. EchoNet-Dynamic's TRAIN -> TEST) -> the `probe` summary over the test rows; refuses
  splits that share a patient."""
  x_tr, y_tr, g_tr = _clean(x_train, y_train, groups_train, kind)
  x_te, y_te, g_te = _clean(x_test, y_test, groups_test, kind)
  shared = set(map(str, g_tr)) & set(map(str, g_te))
  if shared:
    raise ValueError(f"the training and test splits share {len(shared)} patients")
  if len(np.unique(g_tr)) < inner_folds:
    raise ValueError(f"{len(np.unique(g_tr))} training patients: fewer than {inner_folds}")
  preds, penalty = _fit_predict(kind, x_tr, y_tr, g_tr, x_te, k, inner_folds)
  return _scored({"n": int(len(y_te)), "n_train": int(len(y_tr)), "folds": "held-out split",
                  "kind": kind, "k": k, "linear_penalties": [penalty]}, kind, y_te, preds,
                 bootstraps, seed)
