"""Where the ultrasound image is in a frame, and how it becomes a square model input.

Echo frames carry much more than the scan: burned-in patient text, the ECG trace, calipers,
logos, and in duplex / M-mode layouts a scrolling Doppler or M-mode strip. Everything outside
the scan sector is zeroed (it is both noise for the model and PHI), then the frame is cropped to
a square around the sector and resized. **Nothing outside a sector found with confidence is
ever stored**: a clip or still whose sector cannot be established raises `SectorNotFound`
(data prep records it as rejected, with the reason), never falls back to the whole frame.

How the sector is found (`find_sector`):
  * SequenceOfUltrasoundRegions is read first. Regions that lie mostly outside the frame (seen
    in real files whose coordinates refer to another matrix size) are not trusted. Trusted
    non-2D regions (M-mode, spectral Doppler, waveform: RegionSpatialFormat 2-4) are excluded
    from every search, so a strip can never be taken for the sector. A file whose regions are
    all non-2D holds no 2D image: rejected.
  * "dicom": a trusted 2D region (tissue preferred, the largest): the sector is searched
    *inside its rectangle only* (the rectangle is a box, the sector a cone; text printed inside
    the box but outside the cone must go). Clips: the moving-pixel cone (below); stills: the
    textured, solid image component (below). Too small a result (< 10% of the rectangle) is
    not a sector: rejected.
  * "estimated" (no trusted 2D region): the same search over the frame (minus non-2D
    regions), and the result must be cone-shaped (its hull fills <= 85% of its bounding box;
    a phased-array sector fills ~50-65%): a rectangle that moves is a strip or a linear-array
    image, not an echo sector.
  * Clips: the moving cone is built from pixels whose temporal std exceeds a threshold
    (speckle decorrelates, the heart beats) *and* that hold content in most frames (a
    scrolling ECG trace or a blinking label lights a pixel only now and then); opened first
    (specks and thin changing strokes go), then closed to join the fan's pieces; the largest
    component's hull over its opened pixels, without pieces < 2% of the largest (a changing
    counter joined by the closing), is filled (a sector is convex; dark, still blood pools
    inside it are kept), empty pockets that open onto the hull's edge (the concave top of a
    curved-array sector) are cut out again, and its edge is pulled in by one grid step + 1 px
    (the hull runs through boundary pixel centres on a grid that may be subsampled).
  * Stills (no motion to go by): pixels above black, closed then opened with a radius that
    erases text strokes, the largest component's hull, accepted only if the content fills
    >= 50% of the hull (tissue is dense speckle; a block of text is mostly background).
  * "central" (opt-in only, `uncertain="central-crop"`): where the sector cannot be found, the
    middle half (in each dimension) of the 2D region or of the frame. Documented as a
    conservative crop for archives that need it; text in the outer margins never survives,
    text near the centre would.
Second line of defence, clips: pixels inside the sector that stay bright and static over the
sample (overlays: labels, markers, burned-in text that reached into the cone) are zeroed too.

`Geometry` is computed once per video (from a sample of frames) and applied to every frame.
Preset "echoprime" reproduces the released preprocessing geometry instead: mask, centre square
crop of the frame, 10% zoom-in per side, bicubic resize to 224, so released weights see what they
were trained on. NumPy/SciPy/Pillow only.

Kept in one file (~450 lines): the steps of the sector search are tuned against each other on
one set of real and synthetic layouts; apart, they would read as independent when they are not.
"""

from __future__ import annotations

import dataclasses
from typing import Iterator

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage
from scipy.spatial import ConvexHull, QhullError

from data_prep.dicom_reader import DicomInfo, Region


@dataclasses.dataclass(frozen=True)
class Geometry:
  """How to turn one source frame (H, W, C) into a (size, size, C) model input."""
  mask: np.ndarray  # (H, W) bool: True inside the scan sector
  crop: tuple[int, int, int]  # (x0, y0, side) square in source pixels; may extend past edges
  size: int
  source: str  # "dicom" | "estimated" | "central" (see the module docstring)
  resample: str = "area"  # "area" (default, good for downscaling) | "bicubic" (EchoPrime)

  def _cached(self, name: str, make):
    """Per-geometry constants, computed once (the dataclass is frozen, so set directly)."""
    if name not in self.__dict__:
      object.__setattr__(self, name, make())
    return self.__dict__[name]

  def _square_mask(self) -> np.ndarray:
    """The mask cropped like the frames, as 0/1 uint8 (source resolution)."""
    x0, y0, side = self.crop
    return self._cached("_mask_crop",
                        lambda: _crop_padded(self.mask.astype(np.uint8), x0, y0, side))

  def _output_mask(self) -> np.ndarray:
    """(size, size) 0/1 uint8: output pixels whose whole resampling footprint is in the sector.

    The mask goes through the same resampling as the frames (`_area_resize`); a value of
    exactly 1 means every source pixel that contributes to that output pixel is inside the
    sector, so nothing from outside (burned-in text) can leak in through the resize.
    """
    def make():
      square = Image.fromarray(self._square_mask().astype(np.float32), mode="F")
      small = np.asarray(_area_resize(square, self.size))
      return (small >= 1.0 - 1e-4).astype(np.uint8)
    return self._cached("_mask_out", make)

  @property
  def sector_box(self) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) inclusive bounding box of the mask."""
    ys, xs = np.nonzero(self.mask)
    return int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())

  def apply(self, frame: np.ndarray) -> np.ndarray:
    """(H, W) or (H, W, C) uint8 -> (size, size[, C]) uint8 with everything outside zeroed."""
    x0, y0, side = self.crop
    if self.resample == "bicubic":
      # EchoPrime's look: mask at source resolution, then bicubic (whose negative lobes
      # would defeat the footprint test below).
      square = _crop_padded(frame, x0, y0, side)
      mask = self._square_mask()
      square *= mask[..., None] if square.ndim == 3 else mask
      if side == self.size:
        return square
      return np.asarray(Image.fromarray(square).resize((self.size, self.size),
                                                       Image.Resampling.BICUBIC))
    # Area path, all in Pillow's C code: crop (zero-padded past the edges) + box resize, then
    # the output-resolution mask. ~5x cheaper than masking at source resolution.
    box = (x0, y0, x0 + side, y0 + side)
    image = _as_image(frame)
    small = _area_resize(image.crop(box), self.size)
    mask = self._output_mask()
    out = np.asarray(small)
    return out * (mask[..., None] if out.ndim == 3 else mask)


def _area_resize(image: Image.Image, size: int) -> Image.Image:
  """Square image -> (size, size) by area averaging: an integer 2x2/3x3... box reduction
  first while the image is >= 2x the target (cheap in Pillow), then a box resize."""
  factor = image.width // size
  if factor >= 2:
    image = image.reduce(factor)
  return image.resize((size, size), Image.Resampling.BOX)


def _as_image(frame: np.ndarray) -> Image.Image:
  """A Pillow image of an (H, W) or (H, W, 3) uint8 frame without numpy's slow strided copy:
  planar frames (RLE, PlanarConfiguration 1: each channel contiguous) are merged in C."""
  if frame.ndim == 3 and not frame.flags["C_CONTIGUOUS"]:
    planes = [Image.fromarray(np.ascontiguousarray(frame[..., c])) for c in range(3)]
    return Image.merge("RGB", planes)
  return Image.fromarray(frame)


def _crop_padded(frame: np.ndarray, x0: int, y0: int, side: int) -> np.ndarray:
  """Square crop; parts outside the frame are zeros."""
  h, w = frame.shape[:2]
  out = np.zeros((side, side, *frame.shape[2:]), frame.dtype)
  sx0, sy0 = max(x0, 0), max(y0, 0)
  sx1, sy1 = min(x0 + side, w), min(y0 + side, h)
  if sx1 > sx0 and sy1 > sy0:
    out[sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0] = frame[sy0:sy1, sx0:sx1]
  return out


UNCERTAIN_CHOICES = ("reject", "central-crop")
_NON_2D_FORMATS = (2, 3, 4)  # RegionSpatialFormat: M-mode, spectral, waveform
_MAX_CONE_FILL = 0.85  # hull area / bounding box: phased-array sectors ~0.5-0.65, strips ~1
_MIN_REGION_SHARE = 0.1  # the sector covers at least this much of its 2D region rectangle
_MIN_STILL_SOLIDITY = 0.5  # content pixels / hull pixels for a still's sector


class SectorNotFound(ValueError):
  """The scan sector cannot be established with confidence; the message says why."""


def _grey(pixels: np.ndarray, colour: bool) -> np.ndarray:
  """(..., H, W[, 3]) uint8 -> (..., H, W) uint8: the brightest channel (coloured text and
  Doppler count as bright, unlike a channel mean)."""
  return pixels.max(axis=-1) if colour else pixels


def _subsample_step(h: int, w: int) -> int:
  """Large frames are searched at ~200-400 px: sector edges are smooth at that scale."""
  return max(1, min(h, w) // 200)


def _upsample(mask: np.ndarray, step: int, shape: tuple[int, int]) -> np.ndarray:
  full = np.repeat(np.repeat(mask, step, axis=0), step, axis=1)
  return full[:shape[0], :shape[1]]


def _labelled(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """-> (labels, size of component 1..n)."""
  labels, n = ndimage.label(mask)
  return labels, ndimage.sum(mask, labels, index=np.arange(1, n + 1)) if n else np.zeros(0)


def _components_by_size(mask: np.ndarray) -> Iterator[np.ndarray]:
  """Connected components, largest first, made one at a time (callers stop at the first
  accepted one; a noisy mask has hundreds)."""
  labels, sizes = _labelled(mask)
  for i in np.argsort(-sizes, kind="stable"):
    yield labels == i + 1


def _cone_shaped(hull: np.ndarray) -> bool:
  ys, xs = np.nonzero(hull)
  box = (xs.max() - xs.min() + 1) * (ys.max() - ys.min() + 1)
  return hull.sum() <= _MAX_CONE_FILL * box


def moving_sector(frames: np.ndarray, allowed: np.ndarray | None = None, *,
                  require_cone: bool = False, min_std: float = 2.0, min_level: float = 4.0,
                  min_fraction: float = 0.02) -> np.ndarray | None:
  """(T, H, W[, C]) uint8 -> (H, W) bool cone of pixels that change over time, or None.

  allowed: (H, W) bool, where to search (a 2D region minus strips); the result lies inside it.
  require_cone: skip components whose hull is box-shaped (strips, linear-array images).
  None when fewer than 2 frames, or no accepted component covers `min_fraction` of the frame.
  """
  if frames.shape[0] < 2:
    return None
  h, w = frames.shape[1:3]
  frames = frames[::max(1, len(frames) // 16)]  # ~16 frames spread over the sample suffice
  step = _subsample_step(h, w)
  sub = frames[:, ::step, ::step]
  if sub.ndim == 4:  # channel sum as elementwise adds: ~10x faster than mean(axis=-1)
    gray = (sub[..., 0].astype(np.uint16) + sub[..., 1] + sub[..., 2]).astype(np.float32) / 3
  else:
    gray = sub.astype(np.float32)
  # Tissue varies *and* is there in most frames (speckle over a grey background); a scrolling
  # ECG trace, a sweep line or a blinking label lights a pixel only now and then.
  moving = (gray.std(axis=0) > min_std) & ((gray > min_level).mean(axis=0) >= 0.5)
  if allowed is not None:
    moving &= allowed[::step, ::step]
  # Open first: isolated specks (blinking cursors) and thin strokes (changing text: a clock,
  # the heart rate, depth labels next to the fan) go before anything is joined. Then close
  # small gaps (dark blood pools move little) to join the fan's pieces into one component;
  # its hull is taken over the opened pixels only, without small pieces, so neither a closing
  # bridge nor a changing counter joined by it adds anything.
  core = ndimage.binary_opening(ndimage.binary_closing(moving, iterations=1), iterations=2)
  return _largest_sector(ndimage.binary_closing(core, iterations=3), step, (h, w), allowed,
                         min_fraction, lambda hull: not require_cone or _cone_shaped(hull),
                         core)


def still_sector(frame: np.ndarray, allowed: np.ndarray | None = None, *,
                 require_cone: bool = False, min_level: int = 6, min_fraction: float = 0.05
                 ) -> np.ndarray | None:
  """(H, W[, C]) uint8 single frame -> (H, W) bool image sector, or None.

  Without motion, the sector is the dense, textured area: pixels above black, closed (speckle
  gaps) then opened with a radius that erases text strokes; the largest component's hull is
  accepted when content fills >= half of it (a text block is mostly background).
  """
  h, w = frame.shape[:2]
  step = _subsample_step(h, w)
  content = _grey(frame, frame.ndim == 3)[::step, ::step] > min_level
  if allowed is not None:
    content &= allowed[::step, ::step]
  solid = ndimage.binary_opening(ndimage.binary_closing(content, iterations=1), iterations=3)
  return _largest_sector(
      solid, step, (h, w), allowed, min_fraction,
      lambda hull: ((not require_cone or _cone_shaped(hull)) and
                    (content & hull).sum() >= _MIN_STILL_SOLIDITY * hull.sum()))


def _without_specks(mask: np.ndarray, min_share: float = 0.02) -> np.ndarray:
  """`mask` without its connected pieces smaller than `min_share` of the largest: a changing
  counter (clock, heart rate) that a closing joined to the fan is such a piece; the fan's own
  fragments (split by dark, still blood pools) are not."""
  labels, sizes = _labelled(mask)
  if len(sizes) < 2:
    return mask
  return np.isin(labels, np.flatnonzero(sizes >= min_share * sizes.max()) + 1)


def _open_pockets(hull: np.ndarray, pixels: np.ndarray, min_share: float = 0.001
                  ) -> np.ndarray:
  """Parts of `hull` that `pixels` leave empty and that open onto the hull's edge (the concave
  top of a curved-array sector, a dent), each >= `min_share` of the hull: there is no image
  there, and what changes there (a counter) is not image either. Empty parts enclosed by image
  (dark, still blood pools) are holes, not pockets, and stay."""
  solid = ndimage.binary_fill_holes(ndimage.binary_closing(pixels, iterations=2))
  empty = hull & ~solid
  if not empty.any():
    return empty
  edge = hull & ~ndimage.binary_erosion(hull)
  labels, sizes = _labelled(empty)
  touching = ndimage.maximum(edge, labels, index=np.arange(1, len(sizes) + 1))
  keep = np.flatnonzero((sizes >= min_share * hull.sum()) & (touching > 0)) + 1
  return np.isin(labels, keep)


def _largest_sector(candidates: np.ndarray, step: int, shape: tuple[int, int],
                    allowed: np.ndarray | None, min_fraction: float, accept,
                    core: np.ndarray | None = None) -> np.ndarray | None:
  """The filled hull of the largest component of `candidates` (a subsampled grid; of its
  pixels in `core` when given) that `accept(hull)` takes, at full resolution inside `allowed`;
  None once components fall below `min_fraction` of the grid."""
  if allowed is not None:  # closing must not bridge into what is excluded
    candidates = candidates & allowed[::step, ::step]
  for component in _components_by_size(candidates):
    if component.mean() < min_fraction:
      return None
    pixels = _without_specks(component & core) if core is not None else component
    hull = _convex_fill(pixels)
    if accept(hull):
      # The hull runs through boundary pixel centres, outline included, and the grid is
      # `step` px coarse: pulling the edge in by `step` + 1 px keeps it inside the sector.
      full = ndimage.binary_erosion(_upsample(hull & ~_open_pockets(hull, pixels), step, shape),
                                    iterations=step + 1)
      return full & allowed if allowed is not None else full
  return None


def static_overlay(frames: np.ndarray, mask: np.ndarray, max_range: int = 4,
                   min_level: int = 96, min_frames: int = 8) -> np.ndarray:
  """(T, H, W[, C]) uint8 clip sample -> (H, W) bool: pixels inside `mask` that stay bright
  and constant in every channel (labels, markers, text that reached into the cone), grown by
  2 px for glyph edges. Tissue speckle decorrelates and Doppler colour changes; an overlay
  does not. Fewer than `min_frames` frames cannot tell them apart: nothing is flagged."""
  out = np.zeros(mask.shape, bool)
  if len(frames) < min_frames or not mask.any():
    return out
  ys, xs = np.nonzero(mask.any(axis=1))[0], np.nonzero(mask.any(axis=0))[0]
  box = (slice(ys[0], ys[-1] + 1), slice(xs[0], xs[-1] + 1))  # only the sector's box: cheap
  frames = frames[::max(1, len(frames) // 16)][(slice(None), *box)]
  colour = frames.ndim == 4
  low, high = frames.min(axis=0), frames.max(axis=0)
  spread = high - low  # uint8: high >= low, no wrap-around
  static = ((spread.max(axis=-1) if colour else spread) <= max_range) & \
      (_grey(low, colour) >= min_level) & mask[box]
  if static.any():
    out[box] = ndimage.binary_dilation(static, iterations=2)
  return out & mask


def _convex_fill(component: np.ndarray) -> np.ndarray:
  """The convex hull of a pixel set, filled (a scan sector is convex)."""
  ys, xs = np.nonzero(component)
  points = np.stack([xs, ys], axis=1).astype(np.float64)
  try:
    hull = ConvexHull(points)
  except QhullError:  # degenerate (a line): keep the pixels as they are
    return component
  canvas = Image.new("1", (component.shape[1], component.shape[0]), 0)
  ImageDraw.Draw(canvas).polygon([tuple(p) for p in points[hull.vertices]], fill=1, outline=1)
  return np.asarray(canvas, dtype=bool)


def _region_mask(region: Region, shape: tuple[int, int], min_inside: float = 0.9
                 ) -> np.ndarray | None:
  """Rectangle mask of a DICOM region clipped to the frame; None if mostly outside it."""
  h, w = shape
  x0, y0 = max(region.x0, 0), max(region.y0, 0)
  x1, y1 = min(region.x1, w - 1), min(region.y1, h - 1)
  if x1 <= x0 or y1 <= y0:
    return None
  inside = (x1 - x0 + 1) * (y1 - y0 + 1)
  if inside < min_inside * region.area:
    return None
  mask = np.zeros(shape, bool)
  mask[y0:y1 + 1, x0:x1 + 1] = True
  return mask


def _scaled(regions: tuple[Region, ...], info: DicomInfo, shape: tuple[int, int]
            ) -> list[Region]:
  """Regions in the sample's pixel coordinates (a sample decoded at reduced size)."""
  h, w = shape
  if (h, w) == (info.rows, info.columns) or not (info.rows and info.columns):
    return list(regions)
  fy, fx = h / info.rows, w / info.columns
  return [dataclasses.replace(r, x0=int(r.x0 * fx), y0=int(r.y0 * fy), x1=int(r.x1 * fx),
                              y1=int(r.y1 * fy)) for r in regions]


def _central(base: np.ndarray) -> np.ndarray:
  """The middle half, in each dimension, of the bounding box of `base`."""
  ys, xs = np.nonzero(base)
  x0, x1, y0, y1 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
  qx, qy = (x1 - x0) // 4, (y1 - y0) // 4
  out = np.zeros_like(base)
  out[y0 + qy:y1 - qy, x0 + qx:x1 - qx] = True
  return out & base


def find_sector(info: DicomInfo, sample: np.ndarray, uncertain: str = "reject"
                ) -> tuple[np.ndarray, str]:
  """-> ((H, W) bool sector mask in the sample's coordinates, source); see the module docstring.

  sample: (T, H, W[, C]) uint8 frames (T = 1 for a still). Raises SectorNotFound.
  """
  if uncertain not in UNCERTAIN_CHOICES:
    raise ValueError(f"uncertain must be one of {UNCERTAIN_CHOICES}, got {uncertain!r}")
  h, w = sample.shape[1:3]
  regions = _scaled(info.regions, info, (h, w))
  if regions and not any(r.spatial_format == 1 for r in regions) and \
      any(r.spatial_format in _NON_2D_FORMATS for r in regions):
    raise SectorNotFound("no 2D image region (only M-mode / Doppler / waveform regions)")
  trusted = [(r, m) for r in regions if (m := _region_mask(r, (h, w))) is not None]
  allowed = np.ones((h, w), bool)
  for r, m in trusted:
    if r.spatial_format in _NON_2D_FORMATS:
      allowed &= ~m
  two_d = [(r, m) for r, m in trusted if r.spatial_format == 1]
  two_d = [(r, m) for r, m in two_d if r.data_type == 1] or two_d
  clip = sample.shape[0] >= 2
  if two_d:
    rect = max(two_d, key=lambda rm: rm[0].area)[1] & allowed
    search = (moving_sector(sample, rect) if clip else still_sector(sample[0], rect))
    if search is not None and search.sum() >= _MIN_REGION_SHARE * rect.sum():
      mask, source = search, "dicom"
    else:
      mask, source = None, ("no moving sector inside the 2D region (static clip)" if clip
                            else "no image sector inside the 2D region")
    base = rect
  else:
    mask = (moving_sector(sample, allowed, require_cone=True) if clip
            else still_sector(sample[0], allowed, require_cone=True))
    source = "estimated" if mask is not None else (
        "no moving cone-shaped sector and no usable 2D region" if clip
        else "no cone-shaped image sector and no usable 2D region")
    base = allowed
  if mask is None:
    if uncertain == "reject" or not base.any():
      raise SectorNotFound(source + " (--uncertain-sector central-crop keeps the middle half)")
    mask, source = _central(base), "central"
  if clip and source != "central":  # (in a frozen clip every pixel is static)
    mask = mask & ~static_overlay(sample, mask)
  if mask.sum() < 16:
    raise SectorNotFound("the sector is empty once overlays are removed")
  return mask, source


def compute_geometry(info: DicomInfo, sample: np.ndarray, size: int = 224,
                     preset: str = "sector", uncertain: str = "reject") -> Geometry:
  """Geometry for a video from its header and a sample of its frames ((T, H, W[, C]) uint8).

  preset "sector": crop a square around the sector (default). "echoprime": the released
  geometry (centre square crop of the frame, 10% zoom-in per side, bicubic).
  A sample decoded at reduced size (`dicom_reader.iter_frames(reduce=r)`) gives a geometry in
  those coordinates; the DICOM regions are scaled to match. Raises SectorNotFound.
  """
  if preset not in ("sector", "echoprime"):
    raise ValueError(f"preset must be 'sector' or 'echoprime', got {preset!r}")
  h, w = sample.shape[1:3]
  mask, source = find_sector(info, sample, uncertain)
  if preset == "echoprime":
    side = min(h, w)
    x0, y0 = (w - side) // 2, (h - side) // 2
    cut = int(0.1 * side)  # as released: the 10% cut rounded down
    return Geometry(mask, (x0 + cut, y0 + cut, side - 2 * cut), size, source, "bicubic")
  ys, xs = np.nonzero(mask)
  bx0, by0, bx1, by1 = xs.min(), ys.min(), xs.max(), ys.max()
  side = int(max(bx1 - bx0 + 1, by1 - by0 + 1))
  cx, cy = (bx0 + bx1 + 1) / 2, (by0 + by1 + 1) / 2
  return Geometry(mask, (int(round(cx - side / 2)), int(round(cy - side / 2)), side), size, source)
