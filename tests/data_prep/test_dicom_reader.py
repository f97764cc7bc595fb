"""DICOM reader: real vendor files bundled with pydicom, every encoding we claim, timing, errors,
bounded memory."""

import tracemalloc

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from data_prep import dicom_reader as dr
from data_prep import dicom_writer as dw


def _real(name: str) -> str:
  return get_testdata_file(name)


def _bright_color_fraction(video: np.ndarray) -> float:
  """Fraction of bright pixels whose channels disagree by > 20 levels (i.e. look coloured)."""
  px = video.reshape(-1, 3).astype(np.int32)
  bright = px[px.mean(1) > 40]
  return float((np.abs(bright - bright.mean(1, keepdims=True)).max(1) > 20).mean())


def test_real_apical_clip_decodes_grey_not_green():
  """SonoSite YBR_FULL_422 JPEG clip: one colour conversion keeps grey tissue grey."""
  info, video = dr.read_video(_real("examples_ybr_color.dcm"))
  assert video.shape == (30, 240, 320, 3) and video.dtype == np.uint8
  assert info.is_clip and info.is_ultrasound and info.photometric == "YBR_FULL_422"
  assert info.fps == pytest.approx(1000 / 33.333, rel=1e-4) and info.fps_source == "FrameTime"
  assert _bright_color_fraction(video) < 0.05
  # a second YBR->RGB conversion (the released pipeline's bug) would tint it: prove the check
  # can fail
  tinted = pydicom.pixels.convert_color_space(video[0], "YBR_FULL", "RGB")
  assert _bright_color_fraction(tinted[None]) > 0.5
  # the frames move (it is a clip, not one frame repeated)
  assert np.abs(video[0].astype(int) - video[15]).mean() > 1.0


@pytest.mark.parametrize("name, shape, photometric", [
    ("examples_palette.dcm", (1, 350, 800, 3), "PALETTE COLOR"),
    ("examples_rgb_color.dcm", (1, 240, 320, 3), "RGB"),
    ("examples_jpeg2k.dcm", (1, 480, 640, 3), "YBR_RCT"),
    ("ExplVR_BigEnd.dcm", (1, 60, 80, 3), "RGB"),
])
def test_real_vendor_stills_decode(name, shape, photometric):
  info, video = dr.read_video(_real(name))
  assert video.shape == shape and video.dtype == np.uint8
  assert info.photometric == photometric and not info.is_clip
  assert info.fps_source == "fallback"
  assert video.std() > 10  # real image content, not a blank frame


def test_palette_goes_through_its_lut():
  info = dr.read_info(_real("examples_palette.dcm"))
  raw = pydicom.dcmread(info.path).pixel_array  # palette indices
  frame = next(dr.iter_frames(info))
  lut = pydicom.pixels.apply_color_lut(raw, pydicom.dcmread(info.path))
  expected = (lut >> 8).astype(np.uint8) if lut.max() > 255 else lut.astype(np.uint8)
  np.testing.assert_array_equal(frame, expected)
  assert not np.array_equal(frame[..., 0], raw)


def test_tissue_region_is_the_2d_tissue_entry():
  info = dr.read_info(_real("examples_ybr_color.dcm"))
  region = info.tissue_region()
  assert region is not None and (region.spatial_format, region.data_type) == (1, 1)
  assert (region.x0, region.y0, region.x1, region.y1) == (84, 31, 595, 414)


def _clip(gray: bool = False) -> np.ndarray:
  _, video = dr.read_video(_real("examples_ybr_color.dcm"), max_frames=3)
  return np.ascontiguousarray(video[..., 0]) if gray else video


LOSSLESS = ["explicit_le", "deflated", "rle", "jpeg_ls", "j2k"]


@pytest.mark.parametrize("encoding", LOSSLESS)
@pytest.mark.parametrize("kind", ["rgb", "gray", "monochrome1"])
def test_lossless_encodings_round_trip_exactly(tmp_path, encoding, kind):
  frames = _clip(gray=kind != "rgb")
  path = dw.write_us_dicom(str(tmp_path / "x.dcm"), frames, encoding, fps=25.0,
                           monochrome1=kind == "monochrome1")
  info, video = dr.read_video(path)
  expected = frames if frames.ndim == 4 else np.repeat(frames[..., None], 3, -1)
  np.testing.assert_array_equal(video, expected)
  assert info.num_frames == 3 and info.fps == pytest.approx(25.0)


def test_uncompressed_ybr_full_is_converted_once(tmp_path):
  frames = _clip()
  path = dw.write_us_dicom(str(tmp_path / "ybr.dcm"), frames, "explicit_le", ybr_full=True)
  info, video = dr.read_video(path)
  assert info.photometric == "YBR_FULL"
  assert np.abs(video.astype(int) - frames).max() <= 2  # YCbCr rounding only


@pytest.mark.parametrize("gray", [False, True])
def test_jpeg_baseline_422_is_close_and_stays_grey(tmp_path, gray):
  frames = _clip(gray=gray)
  path = dw.write_us_dicom(str(tmp_path / "jpg.dcm"), frames, "jpeg_baseline", jpeg_quality=95)
  info, video = dr.read_video(path)
  assert info.photometric == ("MONOCHROME2" if gray else "YBR_FULL_422")
  expected = frames if frames.ndim == 4 else np.repeat(frames[..., None], 3, -1)
  assert np.abs(video.astype(int) - expected).mean() < 1.0
  assert _bright_color_fraction(video) < 0.05


def test_16_bit_grayscale_is_windowed_to_8_bits(tmp_path):
  ramp = np.tile(np.linspace(0, 65535, 64).astype(np.uint16), (2, 32, 1))
  path = dw.write_us_dicom(str(tmp_path / "w.dcm"), ramp, "explicit_le")
  _, video = dr.read_video(path)
  assert video.dtype == np.uint8
  assert video[0, 0, 0, 0] == 0 and video[0, 0, -1, 0] == 255
  assert np.all(np.diff(video[0, 0, :, 0].astype(int)) >= 0)


def test_frame_rate_order():
  ds = pydicom.Dataset()
  assert dr.frame_rate(ds, 17.0) == (17.0, "fallback")
  ds.RecommendedDisplayFrameRate = 20
  assert dr.frame_rate(ds, 17.0) == (20.0, "RecommendedDisplayFrameRate")
  ds.CineRate = 40
  assert dr.frame_rate(ds, 17.0) == (40.0, "CineRate")
  ds.FrameTimeVector = [0, 20, 20, 20]
  assert dr.frame_rate(ds, 17.0) == (50.0, "FrameTimeVector")
  ds.FrameTime = "10"
  assert dr.frame_rate(ds, 17.0) == (100.0, "FrameTime")
  ds.FrameTime = "0"  # nonsense values fall through to the next source
  assert dr.frame_rate(ds, 17.0) == (50.0, "FrameTimeVector")


def test_not_a_dicom_names_the_file(tmp_path):
  path = tmp_path / "notes.dcm"
  path.write_bytes(b"this is a report, not an image" * 10)
  with pytest.raises(dr.DicomReadError, match="notes.dcm"):
    dr.read_info(str(path))
  with pytest.raises(dr.DicomReadError, match="no such file"):
    dr.read_info(str(tmp_path / "absent.dcm"))


@pytest.mark.parametrize("encoding", ["explicit_le", "rle", "jpeg_baseline"])
def test_truncated_pixel_data_is_a_clear_error(tmp_path, encoding):
  path = dw.write_us_dicom(str(tmp_path / "t.dcm"), _clip(), encoding)
  data = open(path, "rb").read()
  cut = tmp_path / "cut.dcm"
  cut.write_bytes(data[: len(data) - len(data) // 3])
  info = dr.read_info(str(cut))  # the header is intact
  with pytest.raises(dr.DicomReadError, match="cut.dcm"):
    list(dr.iter_frames(info))


def test_frames_stream_in_bounded_memory(tmp_path):
  """A 96-frame 384x512 RGB clip (57 MB decoded) is iterated with a small fraction in RAM."""
  rng = np.random.default_rng(0)
  base = rng.integers(0, 255, (384, 512, 3), dtype=np.uint8)
  frames = np.stack([np.roll(base, i, axis=1) for i in range(96)])
  path = dw.write_us_dicom(str(tmp_path / "big.dcm"), frames, "rle")
  decoded_bytes = frames.nbytes
  del frames
  info = dr.read_info(path)
  tracemalloc.start()
  count = 0
  for frame in dr.iter_frames(info):
    count += 1
    assert frame.shape == (384, 512, 3)
  _, peak = tracemalloc.get_traced_memory()
  tracemalloc.stop()
  assert count == 96
  assert peak < decoded_bytes / 8, f"peak {peak / 1e6:.1f} MB for a {decoded_bytes / 1e6:.0f} MB clip"


def test_max_frames_caps_decoding():
  info = dr.read_info(_real("examples_ybr_color.dcm"))
  assert len(list(dr.iter_frames(info, max_frames=7))) == 7


@pytest.mark.parametrize("name", ["examples_ybr_color.dcm",  # YBR_FULL_422, real echo clip
                                  "SC_rgb_jpeg_dcmtk.dcm",  # YBR_FULL
                                  "SC_rgb_dcmtk_+eb+cr.dcm",  # RGB, no colour transform
                                  "SC_rgb_jpeg_app14_dcmd.dcm"])  # RGB, Adobe APP14 marker
def test_libjpeg_direct_path_matches_pydicom(name):
  """The fast JPEG path (libjpeg colour conversion) agrees with pydicom's own decoding."""
  info = dr.read_info(_real(name))
  assert dr._libjpeg_direct(info)
  fast = np.stack(list(dr._jpeg_frames(info, info.num_frames, reduce=1)))  # no fallback
  reference = np.stack(list(pydicom.pixels.iter_pixels(info.path, as_rgb=True)))
  assert fast.shape == reference.shape
  diff = np.abs(fast.astype(int) - reference)
  assert diff.max() <= 3 and diff.mean() < 0.05  # IDCT / colour rounding only


def test_reduced_jpeg_decode_is_the_downscaled_frame(tmp_path):
  frames = _clip(gray=False)
  path = dw.write_us_dicom(str(tmp_path / "jpg.dcm"), frames, "jpeg_baseline", jpeg_quality=95)
  info = dr.read_info(path)
  full = np.stack(list(dr.iter_frames(info))).astype(np.float32)
  half = np.stack(list(dr.iter_frames(info, reduce=2))).astype(np.float32)
  t, h, w, _ = full.shape
  assert half.shape == (t, -(-h // 2), -(-w // 2), 3)
  pooled = full[:, :h // 2 * 2, :w // 2 * 2].reshape(t, h // 2, 2, w // 2, 2, 3).mean((2, 4))
  assert np.abs(half[:, :h // 2, :w // 2] - pooled).mean() < 3.0
  # Syntaxes without DCT scaling ignore `reduce`.
  rle = dw.write_us_dicom(str(tmp_path / "rle.dcm"), frames, "rle")
  assert next(dr.iter_frames(dr.read_info(rle), reduce=2)).shape == frames.shape[1:]
  with pytest.raises(ValueError, match="reduce"):
    next(dr.iter_frames(info, reduce=3))
