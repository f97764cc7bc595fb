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


def timed(fn, warmup: int, iters: int) -> list[float]:
  """Seconds of each of `iters` calls of fn() after `warmup` untimed ones."""
  import time
  for _ in range(warmup):
    fn()
  times = []
  for _ in range(iters):
    t = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t)
  return times


def spawn(script: str, args: list[str], env: dict[str, str] | None = None) -> dict:
  """Runs `python script --worker ARGS` in a fresh process (its own peak RSS, no shared
  caches) and returns the JSON it printed on its last `RESULT {...}` line."""
  import json
  import subprocess
  import sys
  proc = subprocess.run([sys.executable, os.path.abspath(script), "--worker", *args],
                        capture_output=True, text=True, cwd=os.path.dirname(os.path.dirname(
                            os.path.abspath(__file__))), env={**os.environ, **(env or {})})
  lines = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
  if proc.returncode != 0 or not lines:
    raise RuntimeError(f"worker {' '.join(args)} failed:\n{proc.stderr[-3000:]}")
  return json.loads(lines[-1][len("RESULT "):])


def report(result: dict) -> None:
  """A worker's side of `spawn`: print the result (plus this process's peak RSS)."""
  import json
  print("RESULT " + json.dumps({**result, "peak_rss_mb": peak_rss_mb()}), flush=True)


def cpu_name() -> str:
  import platform
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or "unknown CPU"
