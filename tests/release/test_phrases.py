"""EchoPrime's phrase-coded reports decoded as the release decodes them; its label definitions
as rules."""

import numpy as np
import pytest

from echoprime_jax.release import importer, phrases
from echoprime_jax.retrieval import labels as labels_lib

BOOK = {"Left Ventricle": {"LVEF": ["LV Ejection Fraction is <numerical> %."],
                           "": ["Normal LV size.", "Gradient <numerical> to <numerical> mmHg."]},
        "Aortic Valve": ["Aortic valve is <string>.", "Vmax <numerical> m/s, <string> AS."]}


def test_sub_categories_concatenate_and_slots_fill_as_released():
  book = phrases.PhraseBook(BOOK)
  assert book.sections == ["Left Ventricle", "Aortic Valve"]
  decoded = book.decode([(0, 0, 60.0), (0, 2, 12), (1, 0, "trileaflet"), (1, 1, np.float64(4.5)),
                         (0, 1, "")])
  assert decoded == {
      "Left Ventricle": "LV Ejection Fraction is 60.0 %. Gradient 12 to 12 mmHg. Normal LV size.",
      "Aortic Valve": "Aortic valve is trileaflet. Vmax 4.5 m/s, <string> AS."}
  assert phrases.report_text(decoded) == (
      "Left Ventricle: LV Ejection Fraction is 60.0 %. Gradient 12 to 12 mmHg. Normal LV size. "
      "[SEP]Aortic Valve: Aortic valve is trileaflet. Vmax 4.5 m/s, <string> AS. [SEP]")


@pytest.mark.parametrize("triple", [(2, 0, ""), (0, 3, ""), (-1, 0, ""), (0, 0)])
def test_a_triple_naming_no_phrase_is_one_clear_error(triple):
  with pytest.raises(ValueError, match="names no phrase"):
    phrases.PhraseBook(BOOK).decode([(0, 0, 1.0), triple])


def test_label_definitions_become_rules_that_read_the_text(tmp_path):
  rules = importer.rules_json([
      {"name": "ejection_fraction", "section": "Left Ventricle", "mode": "regression",
       "phrases": ["LV Ejection Fraction is <#> %"]},
      {"name": "aortic_stenosis", "section": "Aortic Valve", "mode": "binary",
       "phrases": ["moderate AS", "severe AS"]}])
  path = tmp_path / "rules.json"
  path.write_text(__import__("json").dumps(rules))
  extracted = labels_lib.load_rules(str(path)).extract(
      {"Left Ventricle": "LV Ejection Fraction is 55.5 %.", "Aortic Valve": "Severe AS."})
  assert extracted == {"ejection_fraction": 55.5, "aortic_stenosis": 1.0}
