"""Config fields that moved to one home, kept as checked aliases.

Each value below has one home (the right-hand side); the old field stays in the stage configs as
an unset placeholder, so a command line written for an older version either agrees with the
home (accepted) or is refused with an error that names both fields. Nothing reads the old field.
A run folder's config.json written before the move is read through `upgrade`.
"""

from __future__ import annotations

import copy
from typing import Any

import ml_collections
from ml_collections import config_dict

MOVED = {  # old field -> its home
    "data.clip_length": "towers.video.num_frames",
    "data.clip_stride": "towers.video.clip_stride",
    "data.max_text_len": "towers.text.max_length",
    "towers.video.num_outputs": "towers.embed_dim",
    "towers.text.out_dim": "towers.embed_dim",
}


def _get(tree: Any, dotted: str):
  for key in dotted.split("."):
    if key not in tree:
      return None
    tree = tree[key]
  return tree


def add(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Adds the unset aliases whose parent exists in `c` (a stage config); -> c."""
  for old in MOVED:
    parent, _, leaf = old.rpartition(".")
    node = _get(c, parent)
    if node is not None and leaf not in node:
      node[leaf] = config_dict.placeholder(int)
  return c


def check(cfg: Any) -> None:
  """ValueError naming both fields when an alias is set and differs from its home."""
  for old, home in MOVED.items():
    given, value = _get(cfg, old), _get(cfg, home)
    if given is not None and value is not None and int(given) != int(value):
      raise ValueError(f"--config.{old}={given} disagrees with --config.{home}={value}: "
                       f"{home} is where this value lives now; set it there and drop {old}")


def drop_unset(d: dict) -> dict:
  """A config dict without the unset aliases (what a run folder records)."""
  d = copy.deepcopy(d)
  for old in MOVED:
    parent, _, leaf = old.rpartition(".")
    node = _get(d, parent)
    if isinstance(node, dict) and leaf in node and node[leaf] is None:
      del node[leaf]
  return d


def upgrade(d: dict) -> dict:
  """A config dict written before the move (config.json) -> the current field layout: each
  old field's value moved to its home (the old field is what that version ran with: its
  pretraining replaced the towers' frame count by data.clip_length), the retired view-tower
  entry of `towers` dropped."""
  d = copy.deepcopy(d)
  for old, home in MOVED.items():
    value = _get(d, old)
    parent, _, leaf = old.rpartition(".")
    if value is None:
      continue
    home_parent, _, home_leaf = home.rpartition(".")
    node = _get(d, home_parent)
    if node is not None:
      node[home_leaf] = value
    del _get(d, parent)[leaf]
  if isinstance(d.get("towers"), dict):
    d["towers"].pop("views", None)
  return d
