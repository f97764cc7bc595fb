"""Small PNG charts drawn with Pillow (no plotting library in the runtime dependencies)."""

from __future__ import annotations

import math

_COLOURS = ((40, 90, 200), (220, 90, 40), (40, 160, 90), (150, 60, 170), (120, 120, 120))


def line_chart(series: dict[str, tuple[list[float], list[float]]], path: str, title: str,
               xlabel: str = "step", size: tuple[int, int] = (640, 400),
               dashed: tuple[str, ...] = ()) -> None:
  """{name: (xs, ys)} -> one PNG with a line per series, axes with min / max ticks, a legend.
  Series named in `dashed` are drawn dashed (baselines, chance)."""
  from PIL import Image, ImageDraw
  w, h = size
  left, right, top, bottom = 60, 20, 34, 40
  img = Image.new("RGB", size, "white")
  draw = ImageDraw.Draw(img)
  points = [(x, y) for xs, ys in series.values() for x, y in zip(xs, ys)
            if math.isfinite(y)]
  draw.text((left, 8), title, fill="black")
  if not points:
    draw.text((left, h // 2), "no data", fill="black")
    img.save(path)
    return
  x0, x1 = min(p[0] for p in points), max(p[0] for p in points)
  y0, y1 = min(p[1] for p in points), max(p[1] for p in points)
  x1, y1 = (x1 if x1 > x0 else x0 + 1), (y1 if y1 > y0 else y0 + 1)

  def px(x, y):
    return (left + (x - x0) / (x1 - x0) * (w - left - right),
            h - bottom - (y - y0) / (y1 - y0) * (h - top - bottom))

  draw.rectangle([left, top, w - right, h - bottom], outline=(160, 160, 160))
  draw.text((4, top - 4), f"{y1:.3g}", fill="black")
  draw.text((4, h - bottom - 8), f"{y0:.3g}", fill="black")
  draw.text((left, h - bottom + 4), f"{x0:g}", fill="black")
  draw.text((w - right - 40, h - bottom + 4), f"{x1:g}", fill="black")
  draw.text(((w - left) // 2, h - 18), xlabel, fill="black")
  for i, (name, (xs, ys)) in enumerate(series.items()):
    colour = _COLOURS[i % len(_COLOURS)]
    line = [px(x, y) for x, y in zip(xs, ys) if math.isfinite(y)]
    if len(line) > 1:
      for a, b in zip(line[:-1], line[1:]):
        if name in dashed:
          _dashed(draw, a, b, colour)
        else:
          draw.line([a, b], fill=colour, width=2)
    elif line:
      draw.ellipse([line[0][0] - 3, line[0][1] - 3, line[0][0] + 3, line[0][1] + 3],
                   fill=colour)
    ly = top + 10 + 14 * i  # legend: a line sample, then the name
    lx = w - right - 170
    if name in dashed:
      _dashed(draw, (lx, ly), (lx + 18, ly), colour)
    else:
      draw.line([(lx, ly), (lx + 18, ly)], fill=colour, width=2)
    draw.text((lx + 24, ly - 6), name, fill=colour)
  img.save(path)


def _dashed(draw, a, b, colour, dash: float = 6.0) -> None:
  """A dashed segment from a to b (dash and gap `dash` pixels long)."""
  length = math.hypot(b[0] - a[0], b[1] - a[1])
  steps = max(int(length // dash), 1)
  for k in range(0, steps, 2):
    t0, t1 = k / steps, min((k + 1) / steps, 1.0)
    draw.line([(a[0] + (b[0] - a[0]) * t0, a[1] + (b[1] - a[1]) * t0),
               (a[0] + (b[0] - a[0]) * t1, a[1] + (b[1] - a[1]) * t1)], fill=colour, width=2)
