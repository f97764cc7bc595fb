"""View taxonomies shared by data prep, the synthetic archive and the view classifier.

Coarse: the 11 views of EchoPrime's released classifier (`COARSE_VIEWS`, its output order).
Fine: a taxonomy file (CSV: view, coarse, mode, description) whose every view names its coarse
parent, so a fine classifier also reports coarse views and fine labels feed every stage that
reads coarse ones. `taxonomies/fine_58.csv` is ours: 58 standard B-mode and colour-Doppler
transthoracic views (ASE nomenclature); the paper's 58-view list was not published, so the
names will not match EchoPrime's internal ones. Users can pass their own file.

Labels are view names. A name resolves in a taxonomy to its own view, or (coarse taxonomy)
through the built-in fine file to its coarse parent; anything else is unlabelled (-1).
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import os

# The 11 coarse views of EchoPrime's released classifier, in its output order.
COARSE_VIEWS = ("A2C", "A3C", "A4C", "A5C", "Apical_Doppler", "Doppler_Parasternal_Long",
                "Doppler_Parasternal_Short", "Parasternal_Long", "Parasternal_Short", "SSN",
                "Subcostal")

# Views whose clips carry colour-flow Doppler.
DOPPLER_VIEWS = ("Apical_Doppler", "Doppler_Parasternal_Long", "Doppler_Parasternal_Short")

FINE_58 = os.path.join(os.path.dirname(os.path.abspath(__file__)), "taxonomies", "fine_58.csv")
MODES = ("bmode", "doppler")


@dataclasses.dataclass(frozen=True)
class Taxonomy:
  """A label space: `views[i]` is class i; `coarse[i]` its COARSE_VIEWS parent."""
  name: str
  views: tuple[str, ...]
  coarse: tuple[str, ...]

  def __len__(self) -> int:
    return len(self.views)

  @property
  def is_coarse(self) -> bool:
    return self.views == COARSE_VIEWS

  def coarse_ids(self) -> tuple[int, ...]:
    """(len(self),) COARSE_VIEWS index of each class (the roll-up)."""
    return tuple(COARSE_VIEWS.index(c) for c in self.coarse)

  def index(self, name: str) -> int:
    """Class of a view label: its own index, else (coarse taxonomy) its parent's; -1 if
    neither (unlabelled, or a coarse label under a fine taxonomy)."""
    own = _positions(self.views)
    if name in own:
      return own[name]
    if self.is_coarse:
      parent = fine_taxonomy().parent(name)
      return own.get(parent, -1) if parent else -1
    return -1

  def parent(self, name: str) -> str:
    i = _positions(self.views).get(name)
    return self.coarse[i] if i is not None else ""


@functools.lru_cache(maxsize=None)
def _positions(views: tuple[str, ...]) -> dict[str, int]:
  return {v: i for i, v in enumerate(views)}


def coarse_taxonomy() -> Taxonomy:
  return Taxonomy("coarse", COARSE_VIEWS, COARSE_VIEWS)


@functools.lru_cache(maxsize=None)
def read_taxonomy(path: str) -> Taxonomy:
  """A taxonomy CSV (header view,coarse[,mode,description]); clear errors naming the file."""
  with open(path, newline="") as f:
    rows = list(csv.DictReader(f))
  if not rows or not {"view", "coarse"} <= set(rows[0]):
    raise ValueError(f"{path}: needs a header with the columns 'view' and 'coarse'")
  views, coarse = [], []
  for n, row in enumerate(rows, start=2):
    view, parent = row["view"].strip(), row["coarse"].strip()
    if not view:
      raise ValueError(f"{path}: line {n} has no view name")
    if view in views:
      raise ValueError(f"{path}: line {n}: view {view!r} is listed twice")
    if parent not in COARSE_VIEWS:
      raise ValueError(f"{path}: line {n}: coarse view {parent!r} is not one of {COARSE_VIEWS}")
    if row.get("mode") and row["mode"].strip() not in MODES:
      raise ValueError(f"{path}: line {n}: mode {row['mode']!r} is not one of {MODES}")
    views.append(view)
    coarse.append(parent)
  return Taxonomy(os.path.splitext(os.path.basename(path))[0], tuple(views), tuple(coarse))


def fine_taxonomy() -> Taxonomy:
  return read_taxonomy(FINE_58)


def taxonomy(name: str) -> Taxonomy:
  """"coarse" (the 11 views), "fine" (the built-in 58), or the path of a taxonomy CSV."""
  if name == "coarse":
    return coarse_taxonomy()
  if name == "fine":
    return fine_taxonomy()
  if not os.path.isfile(name):
    raise FileNotFoundError(f"{name}: no such taxonomy file (or use 'coarse' / 'fine')")
  return read_taxonomy(name)
