"""Keep header values and input paths out of every message: pydicom's and our own.

pydicom quotes raw element values in its validation warnings and log records (a
non-conformant StudyInstanceUID such as `1.2.840.DOE.JOHN.19700101` is printed verbatim), and
input folders are often named after patients. Two tools:

  quiet_pydicom()  pydicom stops validating values on read (so those warnings are never made)
                   and every record of its `pydicom` logger tree is replaced by a fixed notice
                   before any handler sees it. Idempotent and cheap: the readers call it on
                   every file, so spawned pool workers and Beam workers are covered without
                   relying on the parent process's setup.
  redact(text, *paths)  a message with the given paths (whole, relative forms, and their
                   distinctive folder/file names), UIDs, DICOM dates and person names
                   replaced by `<path>`, `<uid>`, `<date>`, `<name>`.
"""

from __future__ import annotations

import logging
import os
import re

log = logging.getLogger("data_prep.log_privacy")

WITHHELD = "message withheld: pydicom messages can quote header values"

# Folder and file names too common to identify anyone; redacting them would only garble text.
_GENERIC = frozenset("""
tmp temp home users user data dicom dcm mnt media var usr opt srv work input inputs output
outputs archive archives study studies series images image echo echos file files export
exports volumes private root scratch shared local storage bucket disk drive dicomdir
""".split())

# UIDs: >= 4 dot-separated parts whose first two are numeric (`1.2.840.DOE.JOHN` included), or
# 3 numeric parts long enough not to be a version number (`2.25.0123...`).
_UID = re.compile(r"(?<![\w.])(?:\d+\.\d+(?:\.[\w^-]+){2,}|\d+\.\d+\.\d+(?<=[\d.]{8}))(?![\w])")
# DICOM DA (YYYYMMDD, 1900-2099), also as the start of a DT value.
_DATE = re.compile(r"(?<!\d)(?:19|20)\d\d(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])"
                   r"(?:\d{2,6}(?:\.\d+)?)?(?!\d)")
# DICOM PN values: components joined by '^'; a quoted one is removed whole (it may hold spaces).
_QUOTED_NAME = re.compile(r"""(['"])[^'"\n]*\^[^'"\n]*\1""")
_NAME = re.compile(r"[\w.\-]*(?:\^[\w.\-]*)+")


class _Withhold(logging.Handler):
  """The only handler of the `pydicom` logger: forwards level and a fixed notice, no text."""

  def emit(self, record: logging.LogRecord) -> None:
    log.log(record.levelno, "pydicom %s %s", record.levelname, WITHHELD)


def quiet_pydicom() -> None:
  """Makes pydicom unable to print header values; see the module docstring. Idempotent, and
  it repairs a handler added since (`pydicom.config.debug()` adds one). The state it keeps is
  pydicom's own (its settings and loggers), so a fresh worker process sets itself up."""
  from pydicom import config
  if config.settings.reading_validation_mode != config.IGNORE:
    config.settings.reading_validation_mode = config.IGNORE
  root = logging.getLogger("pydicom")
  if len(root.handlers) != 1 or not isinstance(root.handlers[0], _Withhold) or root.propagate:
    root.handlers = [_Withhold()]
    root.propagate = False
  for name, child in list(logging.root.manager.loggerDict.items()):
    if name.startswith("pydicom.") and isinstance(child, logging.Logger) and \
        (child.handlers or not child.propagate):
      child.handlers = []  # everything goes up to the withholding handler
      child.propagate = True


def _path_forms(path: str) -> list[str]:
  """The path as given, absolute, real, relative to here, and every trailing sub-path of two
  or more names. (Single names go through `_distinctive`: "A" must not eat every capital A.)"""
  forms = {path, os.path.normpath(path), os.path.abspath(path), os.path.realpath(path)}
  try:
    forms.add(os.path.relpath(path))
  except ValueError:  # another drive (Windows)
    pass
  for form in list(forms):
    parts = [p for p in form.split(os.sep) if p]
    forms.update(os.sep.join(parts[i:]) for i in range(1, len(parts) - 1))
  return [f for f in forms if os.sep in f.strip(os.sep)]


def _distinctive(path: str) -> set[str]:
  """Folder and file names (and file stems) of >= 3 characters that are not generic words."""
  names = set()
  for form in (path, os.path.abspath(path), os.path.realpath(path)):
    for part in form.split(os.sep):
      for name in (part, os.path.splitext(part)[0]):
        if len(name) >= 3 and name.lower() not in _GENERIC and name.strip("."):
          names.add(name)
  return names


def redact(text: str, *paths: str) -> str:
  """`text` with each path (and its forms and distinctive names), UIDs, dates and person
  names replaced; see the module docstring. Public DICOM registry UIDs (transfer syntaxes,
  SOP classes) are kept: they name formats, not people."""
  forms = {f for p in paths if p for f in _path_forms(str(p))}
  for form in sorted(forms, key=len, reverse=True):  # longest first: no fragments left behind
    text = text.replace(form, "<path>")
  names = {n for p in paths if p for n in _distinctive(str(p))}
  for name in sorted(names, key=len, reverse=True):
    text = re.sub(r"(?<![A-Za-z0-9])" + re.escape(name) + r"(?![A-Za-z0-9])", "<path>", text)
  text = _UID.sub(_uid_token, text)
  text = _DATE.sub("<date>", text)
  text = _QUOTED_NAME.sub(lambda m: m.group(1) + "<name>" + m.group(1), text)
  return _NAME.sub("<name>", text)


def _uid_token(match: re.Match) -> str:
  from pydicom.uid import UID_dictionary
  return match.group(0) if match.group(0) in UID_dictionary else "<uid>"
