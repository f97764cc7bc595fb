"""Zero-shot classification: prompt files, prompt ensembling, class probabilities."""

import json

import numpy as np
import pytest

from echoprime_jax.evaluation import zero_shot
from echoprime_jax.retrieval import labels


def test_default_prompts_cover_the_report_labels():
  prompts = zero_shot.load_prompts()
  rules = labels.load_rules()
  for name, spec in prompts.items():
    assert name in rules.names
    assert spec["section"] == rules.rule(name).section  # written as the section they describe
  assert set(prompts["pericardial_effusion"]["values"]) == {0.0, 1.0, 2.0, 3.0}


def test_bad_prompt_files_are_refused(tmp_path):
  path = tmp_path / "p.json"
  path.write_text(json.dumps({"x": {"section": "Left Ventricle", "classes": {"low": ["a"],
                                                                            "high": ["b"]}}}))
  with pytest.raises(ValueError, match="class keys must be numbers"):
    zero_shot.load_prompts(str(path))
  path.write_text(json.dumps({"x": {"classes": {"0": ["a"], "1": ["b"]}}}))
  with pytest.raises(ValueError, match="needs 'section'"):
    zero_shot.load_prompts(str(path))
  path.write_text(json.dumps({"x": {"section": "S", "classes": {"0": ["a"]}}}))
  with pytest.raises(ValueError, match=">= 2 classes"):
    zero_shot.load_prompts(str(path))


class _Encoder:
  """Token ids = the prompt's index in a fixed list (enough to look embeddings up)."""

  def __init__(self, texts):
    self.texts = texts

  def encode(self, sections):
    (section, text), = sections.items()
    assert section == "Pericardium"
    return np.asarray([self.texts.index(text)]), np.ones((1,), np.int32)


def test_class_embedding_is_the_normalised_mean_of_its_prompts():
  spec = {"section": "Pericardium", "values": np.asarray([0.0, 1.0]),
          "prompts": [["none"], ["small", "large"]]}
  table = np.asarray([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
  seen = []

  def embed(ids, mask):
    seen.append(ids.shape[0])
    return table[ids[:, 0]]

  out = zero_shot.class_embeddings(spec, _Encoder(["none", "small", "large"]), embed)
  assert seen == [3]  # one batch for every prompt
  np.testing.assert_allclose(out, [[1, 0, 0], [0, 2 ** -0.5, 2 ** -0.5]], atol=1e-12)


def test_predictions_binary_and_expected_value():
  classes = np.eye(3)[:2]  # two classes along x and y
  studies = np.asarray([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [2 ** -0.5, 2 ** -0.5, 0.0]])
  p, pos = zero_shot.predict(studies, classes, np.asarray([0.0, 1.0]), scale=10.0)
  np.testing.assert_allclose(p.sum(1), 1.0)
  expected = 1 / (1 + np.exp(-10.0))
  np.testing.assert_allclose(pos, [1 - expected, expected, 0.5], rtol=1e-9)
  _, value = zero_shot.predict(studies, classes, np.asarray([20.0, 60.0]), scale=10.0)
  np.testing.assert_allclose(value, [20 + 40 * (1 - expected), 20 + 40 * expected, 40.0])
  m = zero_shot.evaluate(pos, np.asarray([0.0, 1.0, np.nan]), binary=True)
  assert m == {"n": 2, "auc": 1.0}
  r = zero_shot.evaluate(value, np.asarray([20.0, 60.0, 40.0]), binary=False)
  assert r["mae"] == pytest.approx(40 * (1 - expected) * 2 / 3)
  assert r["mean_baseline_mae"] == pytest.approx(40 / 3)
