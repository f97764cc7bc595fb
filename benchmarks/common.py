"""Helpers shared by the benchmark scripts (measurement and RESULTS.md bookkeeping)."""

from __future__ import annotations

import os

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "RESULTS.md")


def peak_rss_mb() -> float:
  """This process's own peak RSS (VmHWM). Not ru_maxrss: Linux carries that across fork+exec,
  so a child would report its parent's peak."""
  with open("/proc/self/status") as f:
    for line in f:
      if line.startswith("VmHWM:"):
        return int(line.split()[1]) / 1024
  raise RuntimeError("no VmHWM in /proc/self/status")


def write_results_block(name: str, table: str, path: str = RESULTS) -> None:
  """Replaces (or appends) the `<!-- name:begin -->...<!-- name:end -->` block of RESULTS.md."""
  begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
  text = open(path).read() if os.path.exists(path) else "# Benchmark results\n"
  block = f"{begin}\n{table}\n{end}"
  if begin in text:
    text = text[:text.index(begin)] + block + text[text.index(end) + len(end):]
  else:
    text = text.rstrip() + "\n\n" + block + "\n"
  with open(path, "w") as f:
    f.write(text)
  print(f"updated {path}")


def publish(name: str, lines: list[str], write: bool) -> None:
  """Prints a benchmark's markdown table and (if `write`) stores it as RESULTS.md block `name`."""
  table = "\n".join(lines)
  print(table)
  if write:
    write_results_block(name, table)
