"""Output folders written whole or not at all, and never over something we did not write.

  with output_folder.atomic("towers/video", "tower", overwrite=args.overwrite) as tmp:
    ...write everything into tmp...

The folder is written as a temporary sibling and renamed into place when complete, with a
marker file naming its kind: a crash leaves the old folder (or none) and never half of a new
one, a rerun leaves no stale file behind, and a reader can tell our folders from others. An
existing destination is replaced only with `overwrite`, only if it carries our marker of the
same kind, and only after the new one is complete; a folder we did not write is never deleted.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from typing import Iterator

MARKER = ".echoprime-output.json"


def kind_of(folder: str) -> str | None:
  """The kind our marker records in `folder`, None for a folder we did not write."""
  try:
    with open(os.path.join(folder, MARKER)) as f:
      return str(json.load(f).get("kind"))
  except (OSError, ValueError, AttributeError):
    return None


def mark(folder: str, kind: str) -> None:
  """Writes our marker of `kind` into `folder` (one we write in place, file by file)."""
  with open(os.path.join(folder, MARKER) + ".tmp", "w") as f:
    json.dump({"kind": kind, "written_by": "echoprime-jax", "format": 1}, f)
  os.replace(os.path.join(folder, MARKER) + ".tmp", os.path.join(folder, MARKER))


def check_replaceable(dest: str, kind: str, overwrite: bool) -> None:
  """FileExistsError / ValueError (one line each) when writing `dest` would lose something."""
  if os.path.isdir(dest) and os.listdir(dest):
    if not overwrite:
      raise FileExistsError(f"{dest}: exists and is not empty; choose a new folder or pass "
                            "--overwrite to replace it")
    found = kind_of(dest)
    if found != kind:
      what = f"a {found} folder" if found else "not written by echoprime-jax"
      raise ValueError(f"{dest}: {what}, so it is not replaced (expected a {kind} folder); "
                       "choose a new folder")
  elif os.path.exists(dest) and not os.path.isdir(dest):
    raise FileExistsError(f"{dest}: exists and is not a folder; choose a new folder")


@contextlib.contextmanager
def atomic(dest: str, kind: str, overwrite: bool = False) -> Iterator[str]:
  """Yields a temporary sibling of `dest` to write into (see the module docstring)."""
  dest = os.path.abspath(dest)
  check_replaceable(dest, kind, overwrite)
  parent = os.path.dirname(dest)
  os.makedirs(parent, exist_ok=True)
  tmp = os.path.join(parent, f".{os.path.basename(dest)}.writing-{os.getpid()}")
  if os.path.exists(tmp):
    shutil.rmtree(tmp)  # ours: a crashed earlier attempt of this very process id
  os.makedirs(tmp)
  try:
    yield tmp
    mark(tmp, kind)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  old = None
  if os.path.isdir(dest):
    if os.listdir(dest):
      old = os.path.join(parent, f".{os.path.basename(dest)}.replaced-{os.getpid()}")
      os.rename(dest, old)
    else:
      os.rmdir(dest)  # an empty folder holds nothing to lose
  os.rename(tmp, dest)
  if old is not None:
    shutil.rmtree(old)  # our own previous output (checked above), now replaced
