"""The test archive's conversion options and helper (shared by the conversion tests)."""

from data_prep import convert, deid

OPTS = convert.Options(size=64, max_frames=8, videos_per_shard=4, split_fractions=(0.5, 0.25, 0.25),
                       max_file_bytes=3 << 20)


def convert_archive(archive, out, **kw):
  return convert.run(str(archive / "dicom"), str(out), deid.INSECURE_TEST_KEY,
                     kw.pop("opts", OPTS), str(archive / "reports.csv"),
                     str(archive / "videos.csv"), progress=False, **kw)
