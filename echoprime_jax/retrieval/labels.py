"""Labels from report text by rules (EchoPrime's shape: name, section, mode, phrases), plus an
ordinal severity mode and a numeric slot.

A rule reads one section's text only (lower-cased). Modes:
  regression  the first number captured by `pattern` (a regex with one group), else NaN;
  binary      1.0 if any of `phrases` occurs, 0.0 if not (NaN when the section is absent);
  severity    0 none / 1 mild / 2 moderate / 3 severe: an `absent` phrase gives 0; else the
              strongest grade word (the file's "grades") in a sentence containing a `finding`
              phrase; a finding named without a grade counts as mild; nothing said: NaN.
NaN means "the report does not say", and every consumer skips it (kNN averages, probes).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re

import numpy as np

DEFAULT_RULES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "label_rules.json")
MODES = ("regression", "binary", "severity")
SEVERITY = ("none", "mild", "moderate", "severe")


@dataclasses.dataclass(frozen=True)
class Rule:
  name: str
  section: str
  mode: str
  phrases: tuple[str, ...] = ()
  finding: tuple[str, ...] = ()
  absent: tuple[str, ...] = ()
  pattern: str = ""


@dataclasses.dataclass(frozen=True)
class Rules:
  rules: tuple[Rule, ...]
  grades: dict[str, tuple[str, ...]]

  @property
  def names(self) -> tuple[str, ...]:
    return tuple(r.name for r in self.rules)

  def rule(self, name: str) -> Rule:
    for r in self.rules:
      if r.name == name:
        return r
    raise KeyError(f"no label rule named {name!r}; rules: {self.names}")

  def extract(self, sections: dict[str, str]) -> dict[str, float]:
    """{section: text} -> {label name: value (NaN: not stated)}."""
    return {r.name: _apply(r, sections.get(r.section, "").lower(), self.grades)
            for r in self.rules}

  def table(self, reports: list[dict[str, str]]) -> dict[str, np.ndarray]:
    """Labels of many reports: {name: (N,) float32}."""
    rows = [self.extract(s) for s in reports]
    return {n: np.asarray([r[n] for r in rows], np.float32) for n in self.names}


def _apply(rule: Rule, text: str, grades: dict[str, tuple[str, ...]]) -> float:
  if not text.strip():
    return float("nan")
  if rule.mode == "regression":
    m = re.search(rule.pattern, text)
    return float(m.group(1)) if m else float("nan")
  if rule.mode == "binary":
    return float(any(p in text for p in rule.phrases))
  # severity
  if any(p in text for p in rule.absent):
    return 0.0
  best = None
  for sentence in re.split(r"(?<=[.;])\s+", text):
    if not any(f in sentence for f in rule.finding):
      continue
    words = set(re.findall(r"[a-z]+", sentence))
    grade = max((SEVERITY.index(g) for g, ws in grades.items() if words & set(ws)), default=1)
    best = grade if best is None else max(best, grade)
  return float("nan") if best is None else float(best)


def load_rules(path: str = DEFAULT_RULES) -> Rules:
  """A rules JSON file; errors name the file and the rule."""
  with open(path) as f:
    try:
      data = json.load(f)
    except json.JSONDecodeError as e:
      raise ValueError(f"{path}: not valid JSON ({e})") from None
  grades = {g: tuple(w.lower() for w in ws) for g, ws in data.get("grades", {
      "mild": ["mild", "mildly"], "moderate": ["moderate", "moderately"],
      "severe": ["severe", "severely"]}).items()}
  if set(grades) - set(SEVERITY[1:]):
    raise ValueError(f"{path}: grades must be among {SEVERITY[1:]}")
  rules, seen = [], set()
  for i, r in enumerate(data.get("rules", [])):
    where = f"{path}: rule {i} ({r.get('name', '?')})"
    if not r.get("name") or not r.get("section"):
      raise ValueError(f"{where}: needs a name and a section")
    if r["name"] in seen:
      raise ValueError(f"{where}: the name is used twice")
    if r.get("mode") not in MODES:
      raise ValueError(f"{where}: mode must be one of {MODES}")
    if r["mode"] == "regression":
      try:
        if re.compile(r.get("pattern", "")).groups != 1:
          raise ValueError(f"{where}: the pattern needs exactly one capture group")
      except re.error as e:
        raise ValueError(f"{where}: bad pattern ({e})") from None
    if r["mode"] == "binary" and not r.get("phrases"):
      raise ValueError(f"{where}: a binary rule needs phrases")
    if r["mode"] == "severity" and not r.get("finding"):
      raise ValueError(f"{where}: a severity rule needs finding phrases")
    seen.add(r["name"])
    rules.append(Rule(r["name"], r["section"], r["mode"],
                      tuple(p.lower() for p in r.get("phrases", ())),
                      tuple(p.lower() for p in r.get("finding", ())),
                      tuple(p.lower() for p in r.get("absent", ())), r.get("pattern", "")))
  if not rules:
    raise ValueError(f"{path}: no rules")
  return Rules(tuple(rules), grades)
