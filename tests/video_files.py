"""Echo-like video files written at test time with FFmpeg's real encoders (PyAV): never checked
in. A grey speckle cone (the scan sector) with a coloured trace outside it, as on a scanner."""

import fractions

import numpy as np

CODECS = {"avi": "mpeg4", "mp4": "libx264", "mjpeg.avi": "mjpeg"}  # EchoNet's AVIs: MPEG-4 / MJPEG


def speckle_cone(frames: int = 12, h: int = 112, w: int = 112, seed: int = 0
                 ) -> tuple[np.ndarray, np.ndarray]:
  """-> ((T, H, W, 3) uint8 video, (H, W) bool sector): grey speckle moving inside a cone, a
  green trace in a corner outside it."""
  rng = np.random.default_rng(seed)
  yy, xx = np.mgrid[:h, :w]
  cone = (np.hypot(xx - w / 2, yy) < h - 5) & (np.abs(np.arctan2(xx - w / 2, yy)) < 0.7)
  video = np.zeros((frames, h, w, 3), np.uint8)
  for t in range(frames):
    video[t][cone] = rng.integers(30, 220, cone.sum(), dtype=np.uint8)[:, None]
  video[:, 3:6, 2:30] = (0, 255, 0)
  return video, cone


def write_video(path, video: np.ndarray, kind: str = "avi", fps: float = 50.0) -> str:
  """(T, H, W, 3) uint8 RGB -> a video file at `path` (container from `kind`, not the name)."""
  import av
  codec = CODECS[kind]
  container = "avi" if kind.endswith("avi") else "mp4"
  with av.open(str(path), "w", format=container) as out:
    stream = out.add_stream(codec, rate=fractions.Fraction(fps).limit_denominator(1000))
    stream.height, stream.width = video.shape[1:3]
    stream.pix_fmt = "yuvj420p" if codec == "mjpeg" else "yuv420p"
    if codec == "libx264":
      stream.options = {"crf": "12"}
    for frame in video:
      for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
        out.mux(packet)
    for packet in stream.encode():
      out.mux(packet)
  return str(path)


def truncate(path, fraction: float = 0.6) -> None:
  """Cut a file to its first `fraction` of bytes (a copy that stopped half way)."""
  with open(path, "rb") as f:
    data = f.read()
  with open(path, "wb") as f:
    f.write(data[: int(len(data) * fraction)])
