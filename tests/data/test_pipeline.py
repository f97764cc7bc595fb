"""Grain pipelines over converted shards: determinism, per-process slices, resume, masks, studies."""

import dataclasses

import jax
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from echoprime_jax.data import augment, normalize, pipeline, tokenizer

CFG = pipeline.PipelineConfig(batch_size=2, clip_length=4, clip_stride=2, frame_size=64,
                              read_threads=2, read_buffer=4)


def _batches(ds, n):
  it = iter(ds)
  return [next(it) for _ in range(n)]


def _equal(a, b):
  return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_same_seed_same_batches_and_shapes(pipeline_data):
  index, enc = pipeline_data
  a = _batches(pipeline.clip_dataset(index, "train", enc, CFG, train=True, process_index=0,
                                     process_count=1), 3)
  b = _batches(pipeline.clip_dataset(index, "train", enc, CFG, train=True, process_index=0,
                                     process_count=1), 3)
  assert all(_equal(x, y) for x, y in zip(a, b))
  batch = a[0]
  assert batch["video"].shape == (2, 4, 64, 64, 3) and batch["video"].dtype == np.uint8
  assert batch["text_ids"].shape == (2, 64) and batch["text_ids"].dtype == np.int32
  assert batch["text_ids"][:, 0].tolist() == [enc.cls_id] * 2
  assert batch["valid"].all() and batch["video"].max() > 0
  other = _batches(pipeline.clip_dataset(index, "train", enc, dataclasses.replace(CFG, seed=1),
                                         train=True, process_index=0, process_count=1), 3)
  assert not all(_equal(x, y) for x, y in zip(a, other))


@pytest.mark.parametrize("train", [True, False])
def test_processes_read_disjoint_records_that_cover_the_epoch(pipeline_data, train):
  index, enc = pipeline_data
  cfg = dataclasses.replace(CFG, num_epochs=1)
  per_process = []
  for p in range(2):
    ds = pipeline.clip_dataset(index, "train", enc, cfg, train=train, process_index=p,
                               process_count=2)
    batches = list(iter(ds))
    per_process.append([int(r) for b in batches for r, v in zip(b["record"], b["valid"]) if v])
  a, b = map(set, per_process)
  assert not a & b
  expected = {r for s in index.studies("train") if s.has_report for r in s.records}
  if train:  # training drops the last partial batch of each process, nothing else
    assert a | b <= expected and len(expected - (a | b)) < 2 * 2 * cfg.batch_size
  else:  # evaluation is padded to whole global batches: every video exactly once
    assert a | b == expected and len(per_process[0]) + len(per_process[1]) == len(expected)


def test_resume_mid_epoch_gives_the_identical_next_batch(pipeline_data):
  index, enc = pipeline_data
  ds = pipeline.clip_dataset(index, "train", enc, CFG, train=True, process_index=0,
                             process_count=1)
  it = iter(ds)
  for _ in range(3):
    next(it)
  state = it.get_state()
  expected = [next(it) for _ in range(2)]
  resumed = iter(pipeline.clip_dataset(index, "train", enc, CFG, train=True, process_index=0,
                                       process_count=1))
  resumed.set_state(state)
  assert all(_equal(next(resumed), e) for e in expected)


def test_short_videos_are_padded_with_a_frame_mask(pipeline_data):
  index, enc = pipeline_data
  cfg = dataclasses.replace(CFG, clip_length=8, num_epochs=1)  # 8-frame videos: 4 at stride 2
  batch = next(iter(pipeline.clip_dataset(index, "val", enc, cfg, train=False,
                                          process_index=0, process_count=1)))
  assert batch["frame_mask"][batch["valid"]].sum(axis=1).tolist() == [4] * batch["valid"].sum()
  assert batch["video"][:, 4:].max() == 0 and batch["video"][batch["valid"], :4].max() > 0


def test_study_batches_hold_every_video_with_masks(pipeline_data):
  index, enc = pipeline_data
  cfg = dataclasses.replace(CFG, max_videos=3, num_epochs=1)
  studies = {i: s for i, s in enumerate(index.studies("train"))}
  seen = 0
  for batch in pipeline.study_dataset(index, "train", enc, cfg, train=False, process_index=0,
                                      process_count=1):
    assert batch["videos"].shape == (2, 3, 4, 64, 64, 3)
    assert batch["section_ids"].shape == (2, 17, 16)
    for b in range(2):
      if not batch["valid"][b]:
        assert not batch["video_mask"][b].any()
        continue
      study = studies[int(batch["study"][b])]
      n = min(len(study.records), 3)
      assert batch["video_mask"][b].tolist() == [True] * n + [False] * (3 - n)
      assert batch["views"][b, :n].tolist() == list(study.views[:n])
      assert batch["videos"][b, n:].max(initial=0) == 0
      assert batch["section_present"][b, tokenizer.SECTION_ORDER.index("Left Ventricle")]
      seen += 1
  assert seen == sum(s.has_report for s in studies.values())


def test_training_batches_carry_per_clip_augmentation_and_evaluation_batches_none(
    pipeline_data):
  index, enc = pipeline_data
  train = next(iter(pipeline.clip_dataset(index, "train", enc, CFG, train=True,
                                          process_index=0, process_count=1)))
  assert train["aug_affine"].shape == (2, 2, 3) and train["aug_intensity"].shape == (2, 3)
  assert train["aug_erase"].shape == (2, 4) and train["aug_erase"].dtype == np.int32
  assert not np.array_equal(train["aug_affine"][0], train["aug_affine"][1])  # one draw per clip
  evaluation = next(iter(pipeline.clip_dataset(index, "val", enc,
                                               dataclasses.replace(CFG, num_epochs=1),
                                               train=False, process_index=0, process_count=1)))
  off = next(iter(pipeline.clip_dataset(index, "train", enc,
                                        dataclasses.replace(CFG, augment=None), train=True,
                                        process_index=0, process_count=1)))
  assert not set(augment.KEYS) & (evaluation.keys() | off.keys())
  # Whole studies: one draw per video, identity parameters in the empty slots.
  cfg = dataclasses.replace(CFG, max_videos=8)
  study = next(iter(pipeline.study_dataset(index, "train", enc, cfg, train=True,
                                           process_index=0, process_count=1)))
  assert study["aug_affine"].shape == (2, 8, 2, 3)
  identity = augment.identity_params()
  for b in range(2):
    empty = ~study["video_mask"][b]
    assert empty.any()  # synthetic studies hold fewer than 8 videos
    for k in augment.KEYS:
      assert (study[k][b][empty] == identity[k]).all()


def test_to_global_shards_the_batch_over_the_data_axis_and_normalises_on_device(pipeline_data):
  index, enc = pipeline_data
  batch = next(iter(pipeline.clip_dataset(index, "train", enc, CFG, train=True,
                                          process_index=0, process_count=1)))
  mesh = Mesh(np.array(jax.devices()[:2]), ("data",))
  arrays = pipeline.to_global(batch, NamedSharding(mesh, P("data")))
  video = arrays["video"]
  assert video.shape == batch["video"].shape and video.dtype == np.uint8
  assert {s.data.shape[0] for s in video.addressable_shards} == {1}  # one clip per device
  x = jax.jit(normalize.normalize_video)(video, arrays["frame_mask"])
  expected = (batch["video"].astype(np.float32) - np.array(normalize.MEAN)) / np.array(
      normalize.STD)
  expected[~batch["frame_mask"]] = 0
  np.testing.assert_allclose(np.asarray(x), expected, rtol=1e-6, atol=1e-6)


def test_worker_processes_resume_at_the_identical_next_batch(pipeline_data):
  index, enc = pipeline_data
  cfg = dataclasses.replace(CFG, workers=2)
  it = iter(pipeline.clip_dataset(index, "train", enc, cfg, train=True, process_index=0,
                                  process_count=1))
  got = [next(it) for _ in range(2)]
  state = it.get_state()
  third = next(it)
  train_records = {r for s in index.studies("train") for r in s.records}
  assert {int(r) for b in got + [third] for r in b["record"]} <= train_records
  resumed = iter(pipeline.clip_dataset(index, "train", enc, cfg, train=True, process_index=0,
                                       process_count=1))
  resumed.set_state(state)  # a fresh pipeline (new worker processes) continues exactly
  assert _equal(next(resumed), third)


@pytest.mark.parametrize("dataset", [pipeline.clip_dataset, pipeline.study_dataset])
def test_shards_of_another_frame_size_are_refused_in_one_line(pipeline_data, dataset):
  """64 px shards for a 224 px model: a clear error before the first batch, not a shape error
  from deep inside Grain or the model."""
  index, enc = pipeline_data
  with pytest.raises(ValueError) as e:
    dataset(index, "train", enc, dataclasses.replace(CFG, frame_size=224), train=False,
            process_index=0, process_count=1)
  message = str(e.value)
  assert "holds 64x64 frames, the model takes 224x224" in message and "--size 224" in message
  assert "\n" not in message
