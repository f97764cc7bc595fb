"""Report section parsing: EchoPrime's [SEP] form and free text with headers."""

from data_prep import reports


def test_structured_form_round_trips():
  text = ("Left Ventricle: Normal size. LVEF 55%. [SEP] Aortic Valve: Mild aortic stenosis. [SEP] "
          "Pericardium: No effusion. [SEP]")
  sections = reports.parse_sections(text)
  assert list(sections) == ["Left Ventricle", "Aortic Valve", "Pericardium"]
  assert sections["Left Ventricle"] == "Normal size. LVEF 55%."
  assert reports.parse_sections(reports.to_text(sections)) == sections


def test_free_text_headers_any_case_and_order():
  text = """ECHO REPORT
  mitral valve: Moderate mitral regurgitation.
  LEFT VENTRICLE: Severely reduced function, EF 25%.
  Resting Segmental Wall Motion Analysis: Akinetic apex.
  Left Atrium: Dilated."""
  sections = reports.parse_sections(text)
  # canonical order and names; the preamble is kept, not lost
  assert list(sections) == ["Left Ventricle", "Resting Segmental Wall Motion Analysis",
                            "Left Atrium", "Mitral Valve", "Other"]
  assert sections["Mitral Valve"] == "Moderate mitral regurgitation."
  assert sections["Other"] == "ECHO REPORT"
  assert sections["Left Ventricle"] == "Severely reduced function, EF 25%."


def test_text_without_headers_is_other_and_empty_is_empty():
  assert reports.parse_sections("Technically limited study.") == {
      "Other": "Technically limited study."}
  assert reports.parse_sections("  ") == {}
  assert len(reports.SECTIONS) == 16 and reports.SECTIONS[-1] == "Postoperative Findings"
