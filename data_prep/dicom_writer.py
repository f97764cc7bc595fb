"""Write ultrasound DICOM files in the encodings real archives contain.

Used by the synthetic archive generator and by the tests that prove the reader decodes every
transfer syntax / photometric combination it claims. NumPy/pydicom/Pillow only.

Encodings (`encoding=`):
  "explicit_le"   uncompressed, Explicit VR Little Endian
  "deflated"      Deflated Explicit VR Little Endian
  "rle"           RLE Lossless
  "jpeg_ls"       JPEG-LS Lossless
  "j2k"           JPEG 2000 Lossless
  "jpeg_baseline" JPEG Baseline 8-bit; RGB input is stored as YBR_FULL_422 (4:2:2
                  subsampling, the usual echo-cart encoding), quality `jpeg_quality`
Photometric interpretations: frames (T, H, W) uint8/uint16 -> MONOCHROME2 (or MONOCHROME1 with
`monochrome1=True`, stored inverted); (T, H, W, 3) uint8 -> RGB, or YBR_FULL with
`ybr_full=True` (converted here, uncompressed only).
"""

from __future__ import annotations

import datetime
import io
from typing import Sequence

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.pixels import convert_color_space
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import (JPEG2000Lossless, JPEGBaseline8Bit, JPEGLSLossless, RLELossless,
                         DeflatedExplicitVRLittleEndian, generate_uid)

from data_prep.dicom_reader import US_IMAGE, US_MULTIFRAME

ENCODINGS = ("explicit_le", "deflated", "rle", "jpeg_ls", "j2k", "jpeg_baseline")


def us_dataset(frames: np.ndarray, *, fps: float | None = 30.0,
               regions: Sequence[tuple[int, int, int, int]] = (),
               patient_name: str = "Anonymous", patient_id: str = "0",
               study_uid: str | None = None, series_uid: str | None = None,
               sop_uid: str | None = None,
               study_date: str = "20000101", accession: str = "", manufacturer: str = "echoprime-jax",
               still: bool = False) -> Dataset:
  """Header of an ultrasound image (multi-frame unless `still`), without pixel data yet."""
  ds = Dataset()
  ds.file_meta = FileMetaDataset()
  sop_class = US_IMAGE if still else US_MULTIFRAME
  ds.file_meta.MediaStorageSOPClassUID = sop_class
  ds.SOPClassUID = sop_class
  ds.SOPInstanceUID = sop_uid or generate_uid()
  ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
  ds.Modality = "US"
  ds.Manufacturer = manufacturer
  ds.PatientName = patient_name
  ds.PatientID = patient_id
  ds.PatientBirthDate = "19500101"
  ds.StudyDate = study_date
  ds.StudyTime = "120000"
  ds.AccessionNumber = accession
  ds.StudyInstanceUID = study_uid or generate_uid()
  ds.SeriesInstanceUID = series_uid or generate_uid()
  ds.InstanceNumber = 1
  if not still and fps:
    ds.FrameTime = f"{1000.0 / fps:.3f}"
    ds.CineRate = int(round(fps))
  items = []
  for x0, y0, x1, y1 in regions:
    item = Dataset()
    item.RegionSpatialFormat = 1  # 2D
    item.RegionDataType = 1  # tissue
    item.RegionFlags = 0
    item.RegionLocationMinX0, item.RegionLocationMinY0 = int(x0), int(y0)
    item.RegionLocationMaxX1, item.RegionLocationMaxY1 = int(x1), int(y1)
    item.PhysicalUnitsXDirection = item.PhysicalUnitsYDirection = 3  # cm
    item.PhysicalDeltaX = item.PhysicalDeltaY = 0.03
    items.append(item)
  if items:
    ds.SequenceOfUltrasoundRegions = DicomSequence(items)
  ds.ContentDate = study_date
  ds.InstanceCreationDate = datetime.date(2000, 1, 1).strftime("%Y%m%d")
  return ds


def write_us_dicom(path: str, frames: np.ndarray, encoding: str = "explicit_le", *,
                   monochrome1: bool = False, ybr_full: bool = False, jpeg_quality: int = 90,
                   **header) -> str:
  """Writes `frames` ((T, H, W) gray or (T, H, W, 3) RGB) as one ultrasound DICOM file."""
  if encoding not in ENCODINGS:
    raise ValueError(f"encoding must be one of {ENCODINGS}, got {encoding!r}")
  frames = np.asarray(frames)
  still = header.pop("still", frames.shape[0] == 1)
  ds = us_dataset(frames, still=still, **header)
  color = frames.ndim == 4
  if not color and monochrome1:
    frames = (np.iinfo(frames.dtype).max - frames).astype(frames.dtype)
  pixels = frames[0] if still else frames
  bits = 16 if frames.dtype == np.uint16 else 8

  if encoding == "jpeg_baseline":
    _set_jpeg_baseline(ds, frames, color, jpeg_quality, still)
  else:
    if color:
      photometric = "RGB"
      if ybr_full:
        if encoding != "explicit_le":
          raise ValueError("ybr_full is only written uncompressed")
        pixels = convert_color_space(pixels, "RGB", "YBR_FULL")
        photometric = "YBR_FULL"
    else:
      photometric = "MONOCHROME1" if monochrome1 else "MONOCHROME2"
    ds.set_pixel_data(pixels, photometric, bits, generate_instance_uid=False)
    if not still:
      ds.NumberOfFrames = frames.shape[0]
    if encoding == "deflated":
      ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    elif encoding != "explicit_le":
      uid = {"rle": RLELossless, "jpeg_ls": JPEGLSLossless, "j2k": JPEG2000Lossless}[encoding]
      ds.compress(uid, generate_instance_uid=False)
  ds.save_as(path, enforce_file_format=True)
  return path


def _set_jpeg_baseline(ds: Dataset, frames: np.ndarray, color: bool, quality: int,
                       still: bool) -> None:
  from PIL import Image
  encoded = []
  for frame in frames:
    buf = io.BytesIO()
    if color:  # Pillow stores RGB input as YCbCr; subsampling=1 is 4:2:2
      Image.fromarray(frame, "RGB").save(buf, "JPEG", quality=quality, subsampling=1)
    else:
      Image.fromarray(frame, "L").save(buf, "JPEG", quality=quality)
    encoded.append(buf.getvalue())
  ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
  ds.Rows, ds.Columns = frames.shape[1:3]
  ds.SamplesPerPixel = 3 if color else 1
  ds.PhotometricInterpretation = "YBR_FULL_422" if color else "MONOCHROME2"
  if color:
    ds.PlanarConfiguration = 0
  ds.BitsAllocated = ds.BitsStored = 8
  ds.HighBit = 7
  ds.PixelRepresentation = 0
  ds.LossyImageCompression = "01"
  if not still:
    ds.NumberOfFrames = frames.shape[0]
  ds.PixelData = encapsulate(encoded)
  ds["PixelData"].VR = "OB"
