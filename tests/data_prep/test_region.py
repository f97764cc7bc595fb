"""Ultrasound region: DICOM regions, the moving-sector estimate, masking, square crop, presets."""

import numpy as np
import pytest
from pydicom.data import get_testdata_file

from data_prep import dicom_reader as dr
from data_prep import region
from data_prep.dicom_reader import DicomInfo, Region


def _info(regions=(), rows=200, cols=300, frames=10) -> DicomInfo:
  return DicomInfo(path="x.dcm", sop_class_uid=dr.US_MULTIFRAME, modality="US",
                   photometric="RGB", transfer_syntax="", rows=rows, columns=cols,
                   num_frames=frames, samples_per_pixel=3, bits_allocated=8, bits_stored=8,
                   fps=30.0, fps_source="FrameTime", regions=tuple(regions), identifiers={})


def _cone(h=200, w=300, apex=(150, 10), radius=170, half_angle=0.6) -> np.ndarray:
  yy, xx = np.mgrid[:h, :w]
  dy, dx = yy - apex[1], xx - apex[0]
  r, ang = np.hypot(dx, dy), np.arctan2(dx, dy)
  return (r < radius) & (np.abs(ang) < half_angle)


def _clip_with_text(frames=12, seed=0):
  """Speckle moving inside a cone; static 'burned-in text' and an ECG line outside it."""
  rng = np.random.default_rng(seed)
  cone = _cone()
  video = np.zeros((frames, 200, 300, 3), np.uint8)
  for t in range(frames):
    speckle = rng.integers(30, 200, (200, 300), dtype=np.uint8)
    video[t][cone] = speckle[cone][:, None]
  video[:, 5:15, 5:80] = 255  # patient name, top-left
  video[:, 185:188, 200:295] = 200  # ECG baseline, bottom-right
  return video, cone


def test_estimated_sector_finds_the_cone_and_drops_text():
  video, cone = _clip_with_text()
  geom = region.compute_geometry(_info(), video)
  assert geom.source == "estimated"
  iou = (geom.mask & cone).sum() / (geom.mask | cone).sum()
  assert iou > 0.9
  masked = np.where(geom.mask[..., None], video[0], 0)
  assert masked[5:15, 5:80].max() == 0 and masked[185:188, 200:295].max() == 0


def test_output_is_square_at_the_configured_size():
  video, _ = _clip_with_text()
  geom = region.compute_geometry(_info(), video, size=112)
  out = geom.apply(video[0])
  assert out.shape == (112, 112, 3) and out.dtype == np.uint8
  x0, y0, x1, y1 = geom.sector_box
  assert geom.crop[2] == max(x1 - x0 + 1, y1 - y0 + 1)  # square around the sector


def test_dicom_region_inside_the_frame_is_used_and_refined_by_motion():
  video, cone = _clip_with_text()
  ys, xs = np.nonzero(cone)
  rect = Region(int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max()), 1, 1)
  geom = region.compute_geometry(_info([rect]), video)
  assert geom.source == "dicom"
  assert (geom.mask & ~cone).sum() < 0.1 * cone.sum()  # refined to the cone, not the rectangle


def test_dicom_region_outside_the_frame_is_not_trusted():
  """The bundled SonoSite clip's region (84..595 x 31..414) lies outside its 320x240 frames."""
  info, video = dr.read_video(get_testdata_file("examples_ybr_color.dcm"))
  geom = region.compute_geometry(info, video)
  assert geom.source == "estimated"
  masked = np.where(geom.mask[..., None], video[0], 0)
  # burned-in labels in the top-left and right margins of the real clip are zeroed
  assert video[0, :25, :40].max() > 100 and masked[:25, :40].max() == 0
  assert video[0, 60:130, 290:].max() > 100 and masked[60:130, 290:].max() == 0
  # the tissue is kept: nearly every strongly moving pixel lies inside the mask
  moving = video.mean(-1).std(0) > 10
  assert (geom.mask & moving).sum() > 0.95 * moving.sum()
  assert geom.apply(video[0]).shape == (224, 224, 3)


def test_still_without_region_uses_the_full_frame():
  frame = np.full((1, 100, 150, 3), 90, np.uint8)
  geom = region.compute_geometry(_info(rows=100, cols=150, frames=1), frame)
  assert geom.source == "full" and geom.mask.all()
  out = geom.apply(frame[0])
  assert out.shape == (224, 224, 3)
  assert out[112, 112, 0] == 90 and out[5, 112].max() == 0  # letterboxed: padding is zero


def test_echoprime_preset_is_centre_crop_with_10_percent_zoom():
  video, _ = _clip_with_text()
  geom = region.compute_geometry(_info(), video, preset="echoprime")
  # frame 300 x 200: centre square of 200 at x 50, minus 20 px per side
  assert geom.crop == (70, 20, 160) and geom.resample == "bicubic"
  assert geom.apply(video[0]).shape == (224, 224, 3)
  with pytest.raises(ValueError, match="preset"):
    region.compute_geometry(_info(), video, preset="other")


def test_crop_past_the_edge_pads_with_zeros():
  frame = np.full((10, 10), 7, np.uint8)
  out = region._crop_padded(frame, -5, -5, 20)
  assert out.shape == (20, 20) and out[:5].max() == 0 and out[5:15, 5:15].min() == 7


def test_nothing_outside_the_sector_leaks_through_the_resize():
  """Bright pixels right against the sector edge must not blur into the output (PHI)."""
  h, w = 480, 640
  cone = _cone(h, w, apex=(320, 10), radius=440, half_angle=0.7)
  frame = np.where(cone[..., None], 0, 255).astype(np.uint8).repeat(3, -1)  # text everywhere out
  geom = region.Geometry(cone, (320 - 240, 0, 480), 224, "dicom")
  assert geom.apply(frame).max() == 0
  inside = np.where(cone[..., None], 120, 0).astype(np.uint8).repeat(3, -1)
  out = geom.apply(inside)
  assert out.max() == 120 and (out[..., 0] == 120).mean() > 0.4  # the sector itself survives


def test_geometry_from_a_reduced_sample_scales_the_dicom_region():
  video, cone = _clip_with_text()
  ys, xs = np.nonzero(cone)
  rect = Region(int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max()), 1, 1)
  full = region.compute_geometry(_info([rect]), video, size=64)
  half = region.compute_geometry(_info([rect]), video[:, ::2, ::2], size=64)
  assert half.source == "dicom" and half.mask.shape == (100, 150)
  assert abs(half.crop[2] * 2 - full.crop[2]) <= 4
  assert abs(half.crop[0] * 2 - full.crop[0]) <= 4 and abs(half.crop[1] * 2 - full.crop[1]) <= 4
