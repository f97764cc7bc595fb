"""Training input pipeline throughput per worker, and what it takes to feed one H200.

  python benchmarks/input_pipeline.py            # prints the table, updates benchmarks/RESULTS.md
  python benchmarks/input_pipeline.py --studies 4 --no-write --no-flops

Measured on synthetic shards (data_prep.synthetic -> data_prep.convert, 224 px records):
* training path, one thread in this process = one core's worth of worker: read the record,
  decode the 16 sampled frames (as RGB), draw the clip's augmentation (RandAugment + erasing
  parameters; applied on the device, see echoprime_jax/data/augment.py), tokenise the report,
  batch;
* the reference in the same run: decoding the same 16 frames alone (the floor of any path);
* the same pipeline with --workers processes (mp_prefetch), for the scaling;
* peak RSS of this process (VmHWM), and the pipeline's buffer settings;
* the device side of augmentation: the jitted apply on one batch on this CPU, and its XLA
  bytes accessed per clip -> the time it takes at H200 HBM bandwidth (4.8 TB/s).
Then FLOPs per video-report pair from the compiled towers' XLA cost analysis (MViT-S clip +
BERT-base 512 tokens, forward; training = 3x forward) give the pairs/s one H200 consumes at
40% MFU (790 TFLOP/s dense bf16) and the cores needed at the measured per-worker rate.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import os
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks.common import peak_rss_mb, publish  # noqa: E402
from data_prep import convert, deid, synthetic  # noqa: E402
from echoprime_jax.data import clips, pipeline, tokenizer  # noqa: E402
from echoprime_jax.data.shards import ShardIndex  # noqa: E402

H200_BF16_FLOPS = 790e12
H200_HBM_BYTES_PER_S = 4.8e12
MFU = 0.4


def _make_shards(tmp: str, studies: int, frames: int) -> str:
  archive = os.path.join(tmp, "archive")
  synthetic.write_archive(archive, studies, seed=0, frames=frames, size=(480, 640),
                          still_fraction=0.0, progress=False)
  out = os.path.join(tmp, "shards")
  convert.run(os.path.join(archive, "dicom"), out, deid.INSECURE_TEST_KEY,
              convert.Options(split_fractions=(1.0, 0.0, 0.0)),
              os.path.join(archive, "reports.csv"), os.path.join(archive, "videos.csv"),
              workers=os.cpu_count() or 1, progress=False)
  return out


class _Tiled(ShardIndex):
  """The split's studies listed `repeat` times over the same records. Grain's index shuffle
  walks cycles over a power-of-two domain: ~1 ms per element on a 34-row table, ~20 us from
  10k rows; a training set has far more than 10k videos, so the benchmark must too."""

  def __init__(self, data_dir: str, repeat: int):
    super().__init__(data_dir)
    self.repeat = repeat

  def studies(self, split: str):
    return super().studies(split) * self.repeat


def _clips_per_s(ds, batches: int, batch_size: int) -> tuple[float, float]:
  """-> (clips per wall second, clips per CPU second of this process). The second is the
  per-core figure: reader threads and batching overlap on a multi-core host, so wall-clock
  rates of an in-process pipeline would flatter it."""
  it = iter(ds)
  next(it)  # start-up (threads, workers, first reads) is not throughput
  t, cpu = time.perf_counter(), time.process_time()
  for _ in range(batches):
    next(it)
  n = batches * batch_size
  return n / (time.perf_counter() - t), n / (time.process_time() - cpu)


def _median_rates(make_ds, batches: int, batch_size: int, repeats: int
                  ) -> tuple[float, float]:
  """Median over `repeats` fresh pipelines (a 2-core machine's rates wander by ~10%)."""
  runs = [_clips_per_s(make_ds(), batches, batch_size) for _ in range(repeats)]
  return tuple(float(np.median([r[i] for r in runs])) for i in range(2))


def _decode_only(index: ShardIndex, cfg: pipeline.PipelineConfig, n: int) -> float:
  """Clips/s of decoding the 16 sampled frames alone (records read and parsed beforehand)."""
  records = pipeline._Records(index.shard_paths("train"))
  recs = [records[i] for i in range(min(n, len(records)))]
  rng = np.random.default_rng(0)
  t = time.perf_counter()
  for i in range(n):
    r = recs[i % len(recs)]
    start = clips.random_start(rng, int(r["num_frames"]), cfg.clip_length, cfg.clip_stride)
    idx, _ = clips.clip_indices(int(r["num_frames"]), cfg.clip_length, cfg.clip_stride, start)
    clips.decode_frames(r["frames"], idx)
  return n / (time.perf_counter() - t)


def _device_augment(batch: dict, reps: int = 5) -> tuple[float, float]:
  """(ms per clip of the jitted augmentation on this host's CPU, XLA bytes accessed per clip)."""
  import jax
  from echoprime_jax.data import augment
  arrays = {k: batch[k] for k in ("video", *augment.KEYS)}
  fn = jax.jit(augment.batch_video)
  compiled = fn.lower(arrays).compile()
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  n = len(batch["video"])
  jax.block_until_ready(compiled(arrays))
  t = time.perf_counter()
  for _ in range(reps):
    jax.block_until_ready(compiled(arrays))
  return (time.perf_counter() - t) / reps / n * 1e3, float(cost["bytes accessed"]) / n


def _forward_flops() -> dict[str, float]:
  """XLA's cost analysis of the compiled forward passes (batch 1), fp32 graphs."""
  import jax
  import jax.numpy as jnp
  from flax import nnx
  from echoprime_jax.models import mvit, text_encoder
  from echoprime_jax.train.step import flops_per_step

  def flops(model_fn, inputs):
    graphdef, state = nnx.split(nnx.eval_shape(model_fn))
    fn = jax.jit(lambda st, kw: nnx.merge(graphdef, st)(**kw))
    return flops_per_step(fn.lower(state, inputs).compile())

  video = flops(lambda: mvit.MViT(mvit.mvit_v2_s(), rngs=nnx.Rngs(0)),
                {"video": jax.ShapeDtypeStruct((1, 16, 224, 224, 3), jnp.float32)})
  text_cfg = text_encoder.TextEncoderConfig()
  text = flops(lambda: text_encoder.TextEncoder(text_cfg, rngs=nnx.Rngs(0)),
               {"input_ids": jax.ShapeDtypeStruct((1, 512), jnp.int32),
                "attention_mask": jax.ShapeDtypeStruct((1, 512), jnp.int32)})
  return {"video": video, "text": text}


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--studies", type=int, default=8, help="synthetic studies (default 8)")
  p.add_argument("--frames", type=int, default=64, help="frames per synthetic clip (default 64)")
  p.add_argument("--batch-size", type=int, default=8, help="clips per batch (default 8)")
  p.add_argument("--batches", type=int, default=40, help="timed batches per setting (default 40)")
  p.add_argument("--table-rows", type=int, default=10000,
                 help="videos the pipeline's table lists (the synthetic records, repeated; "
                      "default 10000)")
  p.add_argument("--workers", type=int, default=2, help="mp_prefetch workers for the scaling row")
  p.add_argument("--repeats", type=int, default=3, help="runs per setting; medians (default 3)")
  p.add_argument("--no-flops", action="store_true", help="skip the tower cost analysis")
  p.add_argument("--no-write", action="store_true", help="do not update benchmarks/RESULTS.md")
  args = p.parse_args()

  with tempfile.TemporaryDirectory() as tmp:
    shards = _make_shards(tmp, args.studies, args.frames)
    n_videos = sum(len(s.records) for s in ShardIndex(shards).studies("train"))
    index = _Tiled(shards, max(1, -(-args.table_rows // n_videos)))
    texts = [s.sections for s in index.studies("train")]
    tok = tokenizer.train_wordpiece(
        [" ".join(f"{k}: {v}" for k, v in s.items()) for s in texts],
        os.path.join(tmp, "tok"), vocab_size=2000)
    encoder = tokenizer.ReportEncoder(tok)
    base = pipeline.PipelineConfig(batch_size=args.batch_size, read_threads=1, read_buffer=4)
    decode = float(np.median([_decode_only(index, base, 200) for _ in range(args.repeats)]))

    def train_ds(cfg=base):
      return pipeline.clip_dataset(index, "train", encoder, cfg, train=True, process_index=0,
                                   process_count=1)

    one, one_cpu = _median_rates(train_ds, args.batches, args.batch_size, args.repeats)
    no_aug, no_aug_cpu = _median_rates(lambda: train_ds(dataclasses.replace(base, augment=None)),
                                       args.batches, args.batch_size, args.repeats)
    rss_in_process = peak_rss_mb()
    sample = next(iter(train_ds()))
    multi, _ = _clips_per_s(train_ds(dataclasses.replace(base, workers=args.workers)),
                            args.batches, args.batch_size)

  lines = [
      f"### Input pipeline ({datetime.date.today().isoformat()}, {os.cpu_count()} cores)",
      "",
      f"{n_videos} synthetic 224x224 records ({args.frames} frames, grey and Doppler colour) "
      f"listed {index.repeat}x (a {n_videos * index.repeat}-row table), "
      f"clips of {base.clip_length} frames at stride {base.clip_stride}, batch "
      f"{args.batch_size}, reports tokenised to 512; read buffer {base.read_buffer} elements.",
      "",
      f"Median of {args.repeats} runs. Per core = clips per CPU-second of this process (the "
      "reader thread and the batching overlap, so the wall rate uses more than one core).",
      "",
      "| path | clips/s per core | wall clips/s | per core vs decode-only |",
      "|---|---|---|---|",
      f"| decode the 16 sampled frames only (reference floor) | {decode:.0f} | {decode:.0f} | "
      "1.00x |",
      f"| training path, 1 reader thread (read + decode + sample + draw augmentation + "
      f"tokenise + batch) | **{one_cpu:.0f}** | {one:.0f} | {one_cpu / decode:.2f}x |",
      f"| same without augmentation | {no_aug_cpu:.0f} | {no_aug:.0f} | "
      f"{no_aug_cpu / decode:.2f}x |",
      f"| training path, {args.workers} worker processes (mp_prefetch) on this "
      f"{os.cpu_count()}-core machine | - | {multi:.0f} | - |",
      "",
      f"Peak RSS of the in-process pipeline: {rss_in_process:.0f} MB.",
  ]
  aug_ms, aug_bytes = _device_augment(sample)
  lines += [
      "",
      f"Augmentation on the device (jitted warp + intensity table + erasing, batch "
      f"{args.batch_size}): {aug_ms:.1f} ms per clip on this CPU; XLA bytes accessed "
      f"{aug_bytes / 1e6:.1f} MB per clip -> ~{aug_bytes / H200_HBM_BYTES_PER_S * 1e6:.0f} us "
      f"per clip at H200 HBM bandwidth (estimate, not measured).",
  ]
  if not args.no_flops:
    f = _forward_flops()
    per_pair = 3 * (f["video"] + f["text"])
    pairs_per_s = MFU * H200_BF16_FLOPS / per_pair
    lines += [
        "",
        f"FLOPs per pair (XLA cost analysis, forward): MViT-S clip {f['video'] / 1e9:.1f} G + "
        f"text 512 tokens {f['text'] / 1e9:.1f} G; training ~3x = {per_pair / 1e9:.0f} GFLOP. "
        f"One H200 at {MFU:.0%} MFU ({H200_BF16_FLOPS / 1e12:.0f} TFLOP/s bf16) consumes "
        f"~{pairs_per_s:.0f} pairs/s: **{pairs_per_s / one_cpu:.1f} cores** at the measured "
        f"{one_cpu:.0f} clips/s per core.",
    ]
  lines += ["", "Reproduce: `python benchmarks/input_pipeline.py`."]
  publish("input_pipeline", lines, write=not args.no_write)


if __name__ == "__main__":
  main()
