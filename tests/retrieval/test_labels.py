"""Label rules on report text: regression slots, binary phrases, severity grades, bad files."""

import json
import math

import numpy as np
import pytest

from data_prep import synthetic
from echoprime_jax.retrieval import labels


def test_default_rules_read_the_synthetic_reports():
  rules = labels.load_rules()
  rng = np.random.default_rng(0)
  for i in range(40):
    study = synthetic.make_study(rng, i)
    from data_prep import reports
    got = rules.extract(reports.parse_sections(synthetic.report_text(study)))
    assert got["lvef"] == pytest.approx(round(study.lvef))
    assert got["pericardial_effusion"] == synthetic.SEVERITIES.index(
        study.findings["pericardial_effusion"])
    assert got["left_atrium_dilation"] == synthetic.SEVERITIES.index(
        study.findings["left_atrium_dilation"])
    assert got["lv_systolic_dysfunction"] == float(study.lvef < 53)
    assert got["lv_dilation"] == float(study.lvef < 50)


def test_modes_by_hand():
  rules = labels.load_rules()
  got = rules.extract({"Left Ventricle": "LV normal. Ejection fraction of approximately 35.5 %.",
                       "Pericardium": "Small effusion. Pericardial effusion, severe; no tamponade.",
                       "Left Atrium": "Left atrial enlargement."})
  assert got["lvef"] == 35.5
  assert got["pericardial_effusion"] == 3  # the strongest grade in a sentence naming it
  assert got["left_atrium_dilation"] == 1  # named without a grade: mild
  assert got["lv_systolic_dysfunction"] == 0.0  # section present, no phrase
  unstated = rules.extract({"Aortic Valve": "Trileaflet."})
  assert all(math.isnan(v) for v in unstated.values())  # nothing said about these sections


@pytest.mark.parametrize("rule, message", [
    ({"name": "x", "section": "IVC", "mode": "ordinal"}, "mode"),
    ({"name": "x", "section": "IVC", "mode": "regression", "pattern": "(\\d+) (\\d+)"}, "one capture"),
    ({"name": "x", "section": "IVC", "mode": "binary"}, "phrases"),
    ({"name": "", "section": "IVC", "mode": "binary", "phrases": ["a"]}, "name and a section"),
])
def test_bad_rules_name_the_file_and_rule(tmp_path, rule, message):
  path = tmp_path / "rules.json"
  path.write_text(json.dumps({"rules": [rule]}))
  with pytest.raises(ValueError, match=message) as e:
    labels.load_rules(str(path))
  assert "rules.json" in str(e.value)
