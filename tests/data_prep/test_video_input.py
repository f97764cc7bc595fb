"""Video files (AVI, MP4) in data prep: read by content like DICOM clips, grouped into studies by
folder or, in EchoNet's layout, one study per video with FileList.csv's split and labels."""

import csv
import json
import os

import numpy as np
import pyarrow.parquet as pq
import pytest

from data_prep import convert, deid, dicom_writer, media, record_schema
from tests.video_files import speckle_cone, truncate, write_video

ROW = {"video_id": "v", "study_id": "s", "patient_id": "p", "split": "train"}
OPTS = convert.Options(size=64, max_frames=16, videos_per_shard=4)


@pytest.mark.parametrize("kind", ["avi", "mp4", "mjpeg.avi"])
def test_a_video_becomes_the_record_its_frames_make_as_dicom(tmp_path, kind):
  """The container's frame rate and count, and exactly the record the DICOM path makes of the
  same decoded pixels (decoded here by PyAV directly): the same sector mask, crop, resize and
  encoding; colour converted once (RGB), the trace outside the sector gone."""
  import av
  video, cone = speckle_cone(frames=12)
  path = write_video(tmp_path / f"clip.{kind}", video, kind, fps=50)
  info = media.read_info(path)
  assert (info.num_frames, info.fps, info.fps_source) == (12, 50.0, "container")
  with av.open(path) as container:
    decoded = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
  assert np.abs(decoded[:, cone].astype(int) - video[:, cone]).mean() < 25  # a lossy codec
  record, extra = convert.convert_video(path, ROW, OPTS)
  dicom = dicom_writer.write_us_dicom(str(tmp_path / "same.dcm"), decoded, "explicit_le")
  reference, _ = convert.convert_video(dicom, ROW, OPTS)
  assert extra["num_frames"] == 12 and record["channels"] == reference["channels"] == 1
  assert np.array_equal(record["crop"], reference["crop"])
  assert record["frames"] == reference["frames"]  # byte for byte
  out = record_schema.decode_frames(record)
  assert out.shape == (12, 64, 64, 1) and out[:, :3, :3].max() < 40  # outside the sector: dark


def _archive_of_videos(root):
  """Two study folders named after a patient, with good, truncated and misnamed files."""
  video, _ = speckle_cone(frames=10)
  a = root / "DOE_JOHN_19650312"
  b = root / "ROE_JANE_MRN0042"
  a.mkdir(parents=True)
  b.mkdir()
  write_video(a / "apical four.avi", video, "avi")
  write_video(a / "plax.mp4", video[:, :, ::-1], "mp4")
  write_video(b / "wrong_extension.dcm", video, "mp4")  # an MP4 named .dcm: read by content
  write_video(b / "cut.avi", video, "avi")
  truncate(b / "cut.avi")
  (b / "fake.mp4").write_text("DOE JOHN: not a video")
  return root


def test_folders_of_videos_convert_with_every_file_accounted_for(tmp_path, caplog):
  archive = _archive_of_videos(tmp_path / "archive")
  out = tmp_path / "out"
  caplog.set_level("DEBUG")
  manifest = convert.run(str(archive), str(out), deid.INSECURE_TEST_KEY, OPTS, progress=False)
  assert len(manifest) == 5
  status = sorted((r["status"], r["reason"]) for r in manifest)
  assert [s for s, _ in status] == ["converted"] * 3 + ["rejected"] * 2
  reasons = " | ".join(r for _, r in status)
  assert "truncated" in reasons and "not a video file" in reasons
  converted = [r for r in manifest if r["status"] == "converted"]
  assert all(r["fps"] == 50.0 and r["num_frames"] == 10 for r in converted)
  studies = pq.read_table(out / "studies.parquet").to_pylist()
  assert sorted(len(s["video_ids"]) for s in studies) == [1, 2]  # one study per folder
  text = json.dumps(manifest) + json.dumps(studies, default=str) + caplog.text
  for name in ("DOE", "JOHN", "19650312", "ROE", "JANE", "MRN0042", "apical", "plax", "cut",
               "wrong_extension", str(archive)):
    assert name not in text, name


def echonet_dataset(root, n=6, splits=("TRAIN", "TRAIN", "VAL", "TEST", "TEST", "TRAIN")):
  """EchoNet-Dynamic's layout: Videos/<id>.avi + FileList.csv (FileName without extension, as
  the dataset ships it) with EF / ESV / EDV and TRAIN / VAL / TEST (splits[i % len(splits)]);
  the last listed video is missing and one unlisted video is there."""
  (root / "Videos").mkdir(parents=True)
  rows = []
  for i in range(n):
    name = f"0X{i:04d}ABCDEF{i}"
    video, _ = speckle_cone(frames=8, seed=i)
    if i != n - 1:  # the last listed video is missing from Videos/
      write_video(root / "Videos" / f"{name}.avi", video, "avi")
    rows.append({"FileName": name, "EF": f"{50 + i:.2f}", "ESV": f"{30 + i}", "EDV": f"{80 + i}",
                 "FrameHeight": 112, "FrameWidth": 112, "FPS": 50, "NumberOfFrames": 8,
                 "Split": splits[i % len(splits)]})
  write_video(root / "Videos" / "0XUNLISTED.avi", speckle_cone(frames=8)[0], "avi")
  with open(root / "FileList.csv", "w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
  (root / "VolumeTracings.csv").write_text("FileName,X1,Y1,X2,Y2,Frame\n")
  return rows


def test_echonet_layout_keeps_the_split_and_writes_the_labels(tmp_path):
  rows = echonet_dataset(tmp_path / "EchoNet-Dynamic")
  out = tmp_path / "out"
  manifest = convert.run(str(tmp_path / "EchoNet-Dynamic"), str(out), deid.INSECURE_TEST_KEY,
                         convert.Options(size=64, layout="echonet"), progress=False)
  reasons = sorted((r["status"], r["reason"]) for r in manifest if r["status"] != "converted")
  assert reasons == [("skipped", "EchoNet metadata file (not a video)")] * 2 + \
      [("skipped", "not listed in FileList.csv")]
  studies = pq.read_table(out / "studies.parquet").to_pylist()
  assert len(studies) == 5  # one per listed video present
  expected = sorted((r["Split"].lower(), float(r["EF"]), float(r["ESV"]), float(r["EDV"]))
                    for r in rows[:5])
  got = sorted((s["split"], s["EF"], s["ESV"], s["EDV"]) for s in studies)
  assert got == expected
  assert all(s["patient_id"] != studies[0]["patient_id"] for s in studies[1:])
  text = (out / "studies.parquet").read_bytes() + (out / "manifest.parquet").read_bytes()
  assert b"0X0001ABCDEF" not in text and b"UNLISTED" not in text


def test_echonet_layout_without_a_file_list_is_one_line_and_exit_2(tmp_path, capsys):
  (tmp_path / "in" / "Videos").mkdir(parents=True)
  write_video(tmp_path / "in" / "Videos" / "a.avi", speckle_cone(frames=4)[0], "avi")
  code = convert.main(["--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"),
                       "--layout", "echonet", "--insecure-test-key"])
  err = capsys.readouterr().err.strip().splitlines()
  assert code == 2 and len(err) == 1 and "FileList.csv" in err[0]
  assert not os.path.exists(tmp_path / "out")
