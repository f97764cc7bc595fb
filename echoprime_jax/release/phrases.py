"""EchoPrime's phrase-coded reports -> report text (`all_phr.json` + `candidate_reports.pkl`).

A released report is a list of (section index, phrase index, value) triples. `all_phr.json`
maps each section name (index order) to its phrase templates: a list, or, as released, an
object of sub-categories whose lists, concatenated in file order, give the phrase indexes. A
template may hold `<numerical>` or `<string>` slots that the triple's value fills, as the release
decodes: every `<numerical>` slot with `str(value)` if the template has one, else every
`<string>` slot (a two-slot range such as "<numerical> to <numerical> mmHg" repeats its one
number: the data holds only one; "60.0" stays "60.0").

Text forms, as released: a decoded report is "Section: phrase phrase [SEP] Section: phrase [SEP]"
(each phrase followed by a space, "[SEP] " before each new section, "[SEP]" at the end); a
section as the report composer quotes it is "Section: phrase phrase [SEP]", and a composed
report is those quotes concatenated with nothing between them.
"""

from __future__ import annotations

import json
from typing import Any, Sequence

SEP = "[SEP]"
NUMERICAL, STRING = "<numerical>", "<string>"


class PhraseBook:
  """`all_phr.json`: section names (index order) and their flattened templates."""

  def __init__(self, templates: dict[str, Any]):
    if not isinstance(templates, dict):
      raise ValueError("the phrase file must map each section name to its templates")
    self.sections: list[str] = [str(k) for k in templates]
    self.templates: list[list[str]] = [_flatten(name, v) for name, v in templates.items()]

  @classmethod
  def load(cls, path: str) -> "PhraseBook":
    try:
      with open(path) as f:
        return cls(json.load(f))
    except json.JSONDecodeError as e:
      raise ValueError(f"{path}: not valid JSON ({e.msg}, line {e.lineno})") from None
    except ValueError as e:
      raise ValueError(f"{path}: {e}") from None

  def phrase(self, section: int, phrase: int, value: Any) -> str:
    """One triple -> its phrase with the slots filled (IndexError for an unknown index)."""
    template = self.templates[section][phrase]
    for slot in (NUMERICAL, STRING):
      if slot in template:
        return template.replace(slot, _text(value))
    return template

  def decode(self, triples: Sequence[Sequence[Any]]) -> dict[str, str]:
    """A coded report -> {section name: its phrases joined by spaces}, first-appearance order.
    ValueError naming the triple when an index is out of range."""
    out: dict[str, list[str]] = {}
    for n, triple in enumerate(triples):
      try:
        s, p, value = triple
        s, p = int(s), int(p)
        if s < 0 or p < 0:
          raise IndexError
        text = self.phrase(s, p, value)
      except (IndexError, TypeError, ValueError):
        raise ValueError(f"triple {n} {tuple(triple)!r} names no phrase of the phrase file "
                         f"({len(self.sections)} sections)") from None
      out.setdefault(self.sections[s], []).append(text)
    return {name: " ".join(phrases) for name, phrases in out.items()}


def section_text(name: str, text: str) -> str:
  """One section as the release's composer quotes it: "Section: text [SEP]"."""
  return f"{name}: {text} {SEP}"


def report_text(sections: dict[str, str]) -> str:
  """A composed report, {section: text} -> the quotes concatenated, as released."""
  return "".join(section_text(name, text) for name, text in sections.items())


def _flatten(name: str, templates: Any) -> list[str]:
  if isinstance(templates, dict):  # sub-categories, in file order
    templates = [t for group in templates.values() for t in _flatten(name, group)]
  if not isinstance(templates, (list, tuple)) or not all(isinstance(t, str) for t in templates):
    raise ValueError(f"section {name!r}: templates must be strings, in a list or in an object "
                     "of lists")
  return list(templates)


def _text(value: Any) -> str:
  if hasattr(value, "item"):  # NumPy scalars as their Python value
    value = value.item()
  return str(value)
