"""What every command shares at its edge: argument checks and the one-line error path.

  p.add_argument("--k", type=cli.at_least(1), ...)     # argparse refuses 0 with one line
  return cli.run(lambda: library_call(...))            # user errors: "error: ..." and exit 2

A user error (a missing or wrong file, a value that cannot work) is one line on stderr saying
what, which file and what to do, and exit code 2: no traceback. Anything else is a bug and keeps
its traceback.
"""

from __future__ import annotations

import argparse
import sys
from typing import Callable

USER_ERRORS = (FileNotFoundError, FileExistsError, NotADirectoryError, IsADirectoryError,
               PermissionError, ValueError)


def at_least(minimum: int) -> Callable[[str], int]:
  """An argparse type: an integer >= minimum."""
  def parse(text: str) -> int:
    try:
      value = int(text)
    except ValueError:
      raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < minimum:
      raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
    return value
  return parse


def error_line(error: BaseException) -> str:
  """One line for the user: the message with its whitespace (newlines) folded."""
  return " ".join(str(error).split()) or type(error).__name__


def absl_flags_parser(config_flag: str | None = None):
  """`app.run(main, flags_parser=cli.absl_flags_parser("config"))`: a bad flag, or a config
  file that cannot be loaded or overridden (ml_collections reads it while parsing, and reports
  some failures only when the config is first read), is one line and exit 2."""
  def parse(argv: list[str]) -> list[str]:
    from absl import flags
    try:
      rest = flags.FLAGS(argv)
      if config_flag:
        getattr(flags.FLAGS, config_flag).get("stage")  # a failed load shows here, inside
      return rest
    except OSError as e:
      given = _flag_value(argv, config_flag) if config_flag else None
      message = (f"{given.split(':')[0]}: cannot load this config file (no such file, or it "
                 "fails to run); give one as configs/NAME.py:VARIANT" if given
                 else error_line(e))
      print(f"error: {message}", file=sys.stderr)
      sys.exit(2)
    except (AttributeError, KeyError) as e:  # ml_collections: an override of no such field
      field = error_line(e).strip("\"'")
      print(f"error: a --{config_flag}.* override names a field the config does not have "
            f"({field}); the config file lists its fields", file=sys.stderr)
      sys.exit(2)
    except (flags.Error, TypeError, ValueError) as e:
      print(f"error: {error_line(e)}", file=sys.stderr)
      sys.exit(2)
  return parse


def _flag_value(argv: list[str], name: str) -> str | None:
  for i, arg in enumerate(argv):
    if arg.startswith(f"--{name}="):
      return arg.split("=", 1)[1]
    if arg == f"--{name}" and i + 1 < len(argv):
      return argv[i + 1]
  return None


def run(call: Callable[[], int | None]) -> int:
  """call() -> its exit code (0 for None); a user error -> one line on stderr, exit 2."""
  try:
    code = call()
  except USER_ERRORS as e:
    print(f"error: {error_line(e)}", file=sys.stderr)
    return 2
  return 0 if code is None else int(code)
