"""Echo reports: the 16 EchoPrime sections, parsing, and the canonical text form.

Two input forms are understood:
* EchoPrime's structured form: `Section: phrase phrase ... [SEP] Section: ... [SEP]`;
* free text with the section names as headers (`Left Ventricle: ...`, one or more per line,
  any case), as clinical reports are usually written.
Text before the first header, or under an unknown header, is kept under "Other" and never
dropped silently. `to_text` writes the canonical structured form in section order.
"""

from __future__ import annotations

import re

SECTIONS = (
    "Left Ventricle", "Resting Segmental Wall Motion Analysis", "Right Ventricle", "Left Atrium",
    "Right Atrium", "Atrial Septum", "Mitral Valve", "Aortic Valve", "Tricuspid Valve",
    "Pulmonic Valve", "Pericardium", "Aorta", "IVC", "Pulmonary Artery", "Pulmonary Veins",
    "Postoperative Findings",
)
OTHER = "Other"
SEP = "[SEP]"

# Longest names first so "Left Ventricle" never shadows a longer header that starts the same.
_HEADER = re.compile(
    r"(?<![A-Za-z])(" + "|".join(re.escape(s) for s in sorted(SECTIONS, key=len, reverse=True))
    + r")\s*:", re.IGNORECASE)
_CANONICAL = {s.lower(): s for s in SECTIONS}


def parse_sections(text: str) -> dict[str, str]:
  """Report text -> {section name: its text}, sections in SECTIONS order (+ "Other")."""
  text = text.replace("\r\n", "\n")
  found: dict[str, list[str]] = {}
  matches = list(_HEADER.finditer(text))
  if not matches:
    body = _clean(text)
    return {OTHER: body} if body else {}
  head = _clean(text[:matches[0].start()])
  if head:
    found.setdefault(OTHER, []).append(head)
  for i, m in enumerate(matches):
    end = matches[i + 1].start() if i + 1 < len(matches) else len(text)
    body = _clean(text[m.end():end])
    if body:
      found.setdefault(_CANONICAL[m.group(1).lower()], []).append(body)
  order = [s for s in SECTIONS if s in found] + ([OTHER] if OTHER in found else [])
  return {s: " ".join(found[s]) for s in order}


def _clean(chunk: str) -> str:
  return " ".join(chunk.replace(SEP, " ").split())


def to_text(sections: dict[str, str]) -> str:
  """{section: text} -> `Section: text [SEP] ...` in SECTIONS order (Other last)."""
  order = [s for s in SECTIONS if sections.get(s)] + ([OTHER] if sections.get(OTHER) else [])
  return " ".join(f"{s}: {sections[s]} {SEP}" for s in order)
