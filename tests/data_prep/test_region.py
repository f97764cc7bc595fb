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


def _duplex(strip_first: bool, frames=12, seed=0):
  """A 2D fan (top) and a scrolling spectral strip (bottom) that out-moves it, text printed
  inside the 2D rectangle but outside the fan, as in real duplex layouts."""
  rng = np.random.default_rng(seed)
  h, w = 240, 320
  cone = _cone(h, w, apex=(160, 5), radius=140, half_angle=0.6)
  video = np.zeros((frames, h, w, 3), np.uint8)
  for t in range(frames):
    video[t][cone] = rng.integers(30, 120, cone.sum(), dtype=np.uint8)[:, None]
    trace = (200 + 25 * np.sin((np.arange(w) + 9 * t) / 7)).astype(int)
    video[t, 160:235, :, :] = rng.integers(0, 255, (75, w, 1), dtype=np.uint8)
    video[t, trace, np.arange(w)] = 255
  video[:, 8:18, 10:90] = 255  # name inside the 2D rectangle, outside the fan
  ys, xs = np.nonzero(cone)
  two_d = Region(0, 0, w - 1, 150, 1, 1)
  strip = Region(0, 158, w - 1, 236, 3, 3)
  regions = [strip, two_d] if strip_first else [two_d, strip]
  return video, cone, regions


@pytest.mark.parametrize("strip_first", [False, True], ids=["2d-first", "strip-first"])
def test_duplex_sector_is_found_inside_the_2d_region_never_the_strip(strip_first):
  video, cone, regions = _duplex(strip_first)
  geom = region.compute_geometry(_info(regions, rows=240, cols=320), video)
  assert geom.source == "dicom"
  assert geom.mask[158:].sum() == 0  # nothing of the strip
  assert geom.mask[8:18, 10:90].sum() == 0  # nor the text in the rectangle's corner
  inside = cone.copy()
  inside[151:] = False
  iou = (geom.mask & inside).sum() / (geom.mask | inside).sum()
  assert iou > 0.85


def test_strip_only_layout_is_rejected():
  video, _, regions = _duplex(False)
  with pytest.raises(region.SectorNotFound, match="no 2D image region"):
    region.compute_geometry(_info([regions[1]], rows=240, cols=320), video)


def test_without_regions_the_cone_wins_over_a_scrolling_strip():
  video, cone, _ = _duplex(False)
  geom = region.compute_geometry(_info(rows=240, cols=320), video)
  assert geom.source == "estimated" and geom.mask[158:].sum() == 0
  assert (geom.mask & cone).sum() > 0.8 * cone[:150].sum()


def test_static_clip_is_rejected_or_centrally_cropped_on_request():
  frame = np.zeros((200, 300, 3), np.uint8)
  frame[40:160, 60:240] = 90
  frame[5:15, 5:80] = 255  # name in the margin
  video = np.repeat(frame[None], 8, axis=0)
  for regions in ([], [Region(20, 20, 280, 190, 1, 1)]):
    with pytest.raises(region.SectorNotFound, match="central-crop"):
      region.compute_geometry(_info(regions), video)
    geom = region.compute_geometry(_info(regions), video, uncertain="central-crop")
    assert geom.source == "central" and geom.mask[5:15, 5:80].sum() == 0
    ys, xs = np.nonzero(geom.mask)
    # the middle half of the frame (or of the region) in each dimension
    assert 0.4 < (ys.max() - ys.min() + 1) / (200 if not regions else 171) < 0.6
    assert 0.4 < (xs.max() - xs.min() + 1) / (300 if not regions else 261) < 0.6
  with pytest.raises(ValueError, match="uncertain"):
    region.compute_geometry(_info(), video, uncertain="full")


def test_still_sector_from_texture_drops_text_in_the_region_rectangle():
  rng = np.random.default_rng(1)
  cone = _cone()
  still = np.zeros((1, 200, 300, 3), np.uint8)
  still[0][cone] = rng.integers(20, 200, cone.sum(), dtype=np.uint8)[:, None]
  still[0, 5:15, 5:80] = 255
  ys, xs = np.nonzero(cone)
  rect = Region(0, 0, 299, int(ys.max()), 1, 1)
  for regions, source in (([rect], "dicom"), ([], "estimated")):
    geom = region.compute_geometry(_info(regions, frames=1), still)
    assert geom.source == source and geom.mask[5:15, 5:80].sum() == 0
    assert (geom.mask & cone).sum() / (geom.mask | cone).sum() > 0.85


def test_still_of_text_alone_is_rejected():
  from PIL import Image, ImageDraw
  image = Image.new("RGB", (300, 200))
  draw = ImageDraw.Draw(image)
  for i, line in enumerate(["DOE^JOHN  MRN 00123456", "03/04/2024 10:32", "BAPTIST MED CTR",
                            "HR 72 bpm  TIS 0.4  MI 0.8", "LYMPH NODE"] * 3):
    draw.text((10 + 7 * (i % 3), 8 + 12 * i), line, fill=(255, 255, 255))
  with pytest.raises(region.SectorNotFound):
    region.compute_geometry(_info(frames=1), np.asarray(image)[None])


def test_static_bright_overlay_inside_the_cone_is_blanked():
  video, cone = _clip_with_text()
  video[:, 100:108, 140:170] = 250  # a label burned into the moving sector
  geom = region.compute_geometry(_info(), video)
  assert geom.mask[100:108, 140:170].sum() == 0
  assert geom.mask[120:130, 140:170].all()  # moving tissue next to it stays


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
  # The mask edge is pulled in by step + 1 sample pixels (region._largest_sector): 2 source
  # px per side more at half scale, on top of the estimate's own few pixels.
  assert abs(half.crop[2] * 2 - full.crop[2]) <= 4 + 4
  assert abs(half.crop[0] * 2 - full.crop[0]) <= 4 + 2 and \
      abs(half.crop[1] * 2 - full.crop[1]) <= 4 + 2


def test_real_vendor_stills_keep_no_text():
  """pydicom's real stills: the Philips curved-array still (its 2D region refers to another
  matrix size) keeps only the fan, not the header bar, the settings column on the left or the
  calipers; the GE linear-array stills (no regions, a rectangular image) cannot be told from a
  strip without motion and are rejected rather than stored with "BAPTIST MED CTR"."""
  info, still = dr.read_video(get_testdata_file("examples_palette.dcm"))
  geom = region.compute_geometry(info, still)
  assert geom.source == "estimated"
  assert geom.mask[:62].sum() == 0 and geom.mask[:, :110].sum() == 0  # header, settings text
  assert geom.mask[280:310, 440:520].sum() == 0  # the calipers
  assert geom.mask[100:130, 380:520].all()  # the bright tissue band is kept
  for name in ("examples_rgb_color.dcm", "examples_jpeg2k.dcm"):
    info, still = dr.read_video(get_testdata_file(name))
    with pytest.raises(region.SectorNotFound, match="cone-shaped"):
      region.compute_geometry(info, still)


@pytest.mark.parametrize("gap", [1, 2, 4])
def test_changing_text_just_outside_the_fan_stays_out(gap):
  """Depth labels and a frame counter that change every frame (so they "move") printed `gap`
  px outside the fan's straight edges: in clips and stills, with and without a 2D region,
  no text pixel is in the mask, and the fan is still found whole."""
  from PIL import Image, ImageDraw
  rng = np.random.default_rng(gap)
  h, w = 240, 320
  cone = _cone(h, w, apex=(160, 5), radius=220, half_angle=0.6)
  frames, text = [], np.zeros((h, w), bool)
  for t in range(12):
    frame = np.zeros((h, w, 3), np.uint8)
    frame[cone] = rng.integers(20, 200, cone.sum(), dtype=np.uint8)[:, None]
    glyphs = Image.new("L", (w, h))
    draw = ImageDraw.Draw(glyphs)
    for i in range(7):
      y = 20 + 28 * i
      xs = np.nonzero(cone[max(y - 8, 0):y + 10].any(0))[0]
      draw.text((xs.max() + gap, y - 5), str(2 * i + t % 3), fill=255)
      draw.text((xs.min() - gap - 12, y - 5), f"{t:02d}", fill=255)
    on = np.asarray(glyphs) > 0
    frame[on] = 255
    text |= on
    frames.append(frame)
  video = np.stack(frames)
  assert not (text & cone).any()
  for sample in (video, video[:1]):
    for regions in ([Region(0, 0, w - 1, h - 1, 1, 1)], []):
      geom = region.compute_geometry(_info(regions, rows=h, cols=w, frames=len(sample)), sample)
      assert (geom.mask & text).sum() == 0
      # (the edge pulled in by 2 px costs ~3.5% of a 220 px fan)
      assert (geom.mask & cone).sum() / (geom.mask | cone).sum() > 0.95


def test_scrolling_ecg_below_the_fan_does_not_pull_the_mask_over_it():
  """An ECG trace scrolling just below the arc, its spikes reaching up to the fan, and dim
  static text between them (below the overlay check's brightness): the trace lights each
  pixel only now and then, so it is not sector, and nothing of it or the text is kept."""
  from PIL import Image, ImageDraw
  rng = np.random.default_rng(3)
  h, w, n = 240, 320, 10
  cone = _cone(h, w, apex=(160, 6), radius=150, half_angle=0.6)
  xs = np.arange(w + 8 * n)
  trace_y = 165 + 3 * np.sin(xs / 17.0) - np.where(xs % 70 < 6, 30 * np.sin(np.pi * (xs % 70) / 6),
                                                   0)
  glyphs = Image.new("L", (w, h))
  ImageDraw.Draw(glyphs).text((140, 150), "DOE 19700101", fill=255)
  text = (np.asarray(glyphs) > 0) & ~cone
  video = np.zeros((n, h, w, 3), np.uint8)
  trace = np.zeros((h, w), bool)
  for t in range(n):
    video[t][cone] = rng.integers(20, 200, cone.sum(), dtype=np.uint8)[:, None]
    ys = np.round(trace_y[8 * t:8 * t + w]).astype(int)
    lit = np.zeros((h, w), bool)
    lit[ys[10:-10], np.arange(10, w - 10)] = True
    lit[np.clip(ys[10:-10] + 1, 0, h - 1), np.arange(10, w - 10)] = True
    lit &= ~cone
    video[t][lit] = 200
    trace |= lit
    video[t][text & ~lit] = 90
  for regions in ([Region(0, 0, w - 1, h - 1, 1, 1)], []):
    geom = region.compute_geometry(_info(regions, rows=h, cols=w, frames=n), video)
    assert (geom.mask & (trace | text)).sum() == 0
    assert (geom.mask & ~cone).sum() == 0 and (geom.mask & cone).sum() > 0.9 * cone.sum()


def test_counter_in_the_concave_top_of_a_curved_array_sector_is_not_kept():
  """A curved-array sector (an annulus slice) is not convex: its hull covers the dip above the
  inner arc. A frame counter printed there changes (so it "moves"), but the dip holds no image
  and opens onto the hull's edge: it is cut out, counter and all."""
  from PIL import Image, ImageDraw
  rng = np.random.default_rng(5)
  h, w, n = 240, 300, 8
  yy, xx = np.mgrid[:h, :w]
  r, ang = np.hypot(xx - 150, yy + 20), np.arctan2(xx - 150, yy + 20)
  fan = (r < 240) & (r > 80) & (np.abs(ang) < 0.8)
  video = np.zeros((n, h, w, 3), np.uint8)
  text = np.zeros((h, w), bool)
  for t in range(n):
    video[t][fan] = rng.integers(20, 200, fan.sum(), dtype=np.uint8)[:, None]
    glyphs = Image.new("L", (w, h))
    ImageDraw.Draw(glyphs).text((128, 40), f"{t:02d}:{t:02d}", fill=255)
    on = (np.asarray(glyphs) > 0) & ~fan
    video[t][on] = 255
    text |= on
  assert region._convex_fill(fan)[text].all()  # the counter lies inside the fan's hull
  for regions in ([Region(0, 0, w - 1, h - 1, 1, 1)], []):
    geom = region.compute_geometry(_info(regions, rows=h, cols=w, frames=n), video)
    assert (geom.mask & text).sum() == 0 and (geom.mask & ~fan).sum() == 0
    assert (geom.mask & fan).sum() > 0.9 * fan.sum()
