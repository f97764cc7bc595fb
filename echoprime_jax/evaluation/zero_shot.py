"""Zero-shot classification as CLIP does it: studies scored against text prompts per class.

A prompt file (JSON) names, per target, the report section the prompts are written as and, per
class value, one or more prompt texts:

  {"pericardial_effusion": {"section": "Pericardium",
                            "classes": {"0": ["No pericardial effusion."],
                                        "1": ["There is a small pericardial effusion.", ...]}},
   "lvef": {"section": "Left Ventricle",
            "classes": {"20": ["Ejection fraction is 20%."], "35": [...], ...}}}

Each prompt is encoded as a one-section report ("Section: text", as the text tower read the
reports in pretraining), embedded by the text tower and L2-normalised; a class's embedding is
the normalised mean of its prompts' (prompt ensembling). A study's class probabilities are the
softmax over classes of `scale x cosine(study video embedding, class embedding)`, with the
towers' learned scale (1 / temperature). Predictions: binary targets (classes 0 and 1) -> the
probability of class 1 (scored by AUC); every other target -> the probability-weighted class
value (ordinal grades and continuous values; scored by MAE).
"""

from __future__ import annotations

import json
import os

import numpy as np

DEFAULT_PROMPTS = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                               "zero_shot_prompts.json")


def load_prompts(path: str = DEFAULT_PROMPTS) -> dict[str, dict]:
  """-> {target: {"section": str, "values": (C,) float, "prompts": [[str, ...] per class]}}."""
  with open(path) as f:
    raw = json.load(f)
  out = {}
  for target, spec in raw.items():
    if not isinstance(spec, dict) or "classes" not in spec or "section" not in spec:
      raise ValueError(f"{path}: target {target!r} needs 'section' and 'classes'")
    try:
      values = [float(v) for v in spec["classes"]]
    except ValueError:
      raise ValueError(f"{path}: target {target!r}: class keys must be numbers (the label "
                       f"values), got {list(spec['classes'])}") from None
    prompts = [list(p) if isinstance(p, list) else [p] for p in spec["classes"].values()]
    if len(values) < 2 or any(not p for p in prompts):
      raise ValueError(f"{path}: target {target!r} needs >= 2 classes, each with a prompt")
    out[target] = {"section": spec["section"], "values": np.asarray(values), "prompts": prompts}
  return out


def class_embeddings(spec: dict, encoder, embed_texts) -> np.ndarray:
  """-> (C, D) L2-normalised class embeddings (mean of each class's prompt embeddings).
  embed_texts(ids (N, L), mask (N, L)) -> (N, D) L2-normalised."""
  rows = [encoder.encode({spec["section"]: text}) for texts in spec["prompts"] for text in texts]
  emb = embed_texts(np.stack([r[0] for r in rows]), np.stack([r[1] for r in rows]))
  owner = np.repeat(np.arange(len(spec["prompts"])), [len(p) for p in spec["prompts"]])
  out = np.zeros((len(spec["prompts"]), emb.shape[1]), np.float64)
  np.add.at(out, owner, emb)
  return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)


def predict(study_embedding: np.ndarray, classes: np.ndarray, values: np.ndarray,
            scale: float) -> tuple[np.ndarray, np.ndarray]:
  """study_embedding (M, D) normalised, classes (C, D) -> (probabilities (M, C), prediction
  (M,)): P(class 1) for a 0/1 target, else the expected class value."""
  logits = scale * study_embedding @ classes.T
  logits -= logits.max(1, keepdims=True)
  p = np.exp(logits)
  p /= p.sum(1, keepdims=True)
  if set(values.tolist()) == {0.0, 1.0}:
    return p, p[:, list(values).index(1.0)]
  return p, p @ values


def evaluate(prediction: np.ndarray, y: np.ndarray, binary: bool) -> dict[str, float]:
  """Against the labels (NaN dropped): AUC (binary) or MAE vs the label mean (else)."""
  from echoprime_jax.evaluation import probes
  keep = ~np.isnan(y)
  pred, y = prediction[keep], y[keep]
  if binary:
    return {"n": int(keep.sum()), "auc": probes.auc(pred, y)}
  return {"n": int(keep.sum()), "mae": float(np.abs(pred - y).mean()),
          "mean_baseline_mae": float(np.abs(y.mean() - y).mean()),
          "pearson_r": float(np.corrcoef(pred, y)[0, 1]) if pred.std() > 0 else float("nan")}
