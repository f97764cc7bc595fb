"""EchoPrime's phrase-coded reports -> report text (`all_phr.json` + `candidate_reports.pkl`).

A released report is a list of (section index, phrase index, value) triples. `all_phr.json` maps
each section name to its phrase templates, sections in index order; a template may hold
`<numerical>` or `<string>` slots, which the triple's value fills. The text has EchoPrime's
report form: each section the report has, in its first-appearance order, as
`"<Section>: <phrase> <phrase> ... [SEP] "` (phrases joined by one space).

Slots: a scalar value fills every slot of its template, as the release decodes (a two-slot range
such as "<numerical> to <numerical> mmHg" then repeats one number: the data holds only one); a
list / tuple value fills the slots in order. Numbers are written as Python writes them
(`str(55.0)` is "55.0"), NaN or None leaves the slot empty.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any, Sequence

SEP = "[SEP]"
SLOT = re.compile(r"<numerical>|<string>")


class PhraseBook:
  """`all_phr.json` as section names (index order) and their templates."""

  def __init__(self, templates: dict[str, Sequence[str]]):
    if not isinstance(templates, dict) or not all(
        isinstance(v, (list, tuple)) and all(isinstance(t, str) for t in v)
        for v in templates.values()):
      raise ValueError("the phrase file must map each section name to a list of templates")
    self.sections: list[str] = [str(k) for k in templates]
    self.templates: list[list[str]] = [list(v) for v in templates.values()]

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
    values = list(value) if isinstance(value, (list, tuple)) else None
    count = iter(range(10 ** 6))

    def fill(_):
      v = value if values is None else (values[next(count)] if values else "")
      return _text(v)
    return SLOT.sub(fill, template)

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


def report_text(sections: dict[str, str]) -> str:
  """{section: text} -> EchoPrime's report form, "Section: text [SEP] " per section."""
  return "".join(section_text(name, text) for name, text in sections.items())


def section_text(name: str, text: str) -> str:
  """One section as it stands in a report: "Section: text [SEP] "."""
  return f"{name}: {text} {SEP} "


def _text(value: Any) -> str:
  if value is None or (isinstance(value, float) and math.isnan(value)):
    return ""
  if hasattr(value, "item"):  # NumPy scalars as their Python value
    value = value.item()
  return str(value)
