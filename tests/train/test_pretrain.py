"""Pretraining: sharded steps equal the single-device step; loss falls; recall; CLI runs."""

import copy

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from configs import pretrain as pretrain_config
from echoprime_jax import losses, parallel
from echoprime_jax.data import pipeline
from echoprime_jax.models import bert, mvit, text_encoder, two_tower
from echoprime_jax.train import optimizer
from echoprime_jax.train import step as step_lib
from echoprime_jax.train.stages import pretrain


def tiny_config(data_dir, **overrides):
  cfg = pretrain_config.get_config("tiny")
  cfg.data.dir = str(data_dir)
  cfg.towers.video.num_frames, cfg.towers.text.max_length = 8, 64
  cfg.towers.video.image_size = 64
  cfg.data.read_threads = 1
  for key, value in overrides.items():
    node = cfg
    *path, last = key.split(".")
    for p in path:
      node = node[p]
    node[last] = value
  return cfg


def micro_towers(vocab_size: int) -> two_tower.TwoTowerConfig:
  """Smaller than `tiny` (2 MViT blocks, 1 BERT layer): the sharding tests compile 3 steps."""
  video = mvit.mvit_tiny()
  video = video.replace(blocks=video.blocks[:2], num_outputs=32)
  text = text_encoder.TextEncoderConfig(
      bert=bert.bert_tiny(num_hidden_layers=1, vocab_size=vocab_size), out_dim=32)
  return two_tower.TwoTowerConfig(video=video, text=text)


@pytest.fixture(scope="module")
def setup(pipeline_data, converted):
  index, enc = pipeline_data
  cfg = tiny_config(converted[0], batch_size=4)
  mcfg = micro_towers(len(enc.tokenizer))
  batch = next(iter(pipeline.clip_dataset(
      index, "train", enc, pipeline.PipelineConfig(batch_size=4, clip_length=8, clip_stride=1,
                                                   frame_size=64), train=True,
      process_index=0, process_count=1)))
  batch = {k: v for k, v in batch.items() if k not in ("view", "record", "valid")}
  return cfg, mcfg, batch


def _create(mcfg):
  return two_tower.TwoTower(mcfg, rngs=nnx.Rngs(0))


def _one_step(cfg, mcfg, batch, axes, n_devices, steps=2):
  """The trainer's step (`step.train_step` with the pretraining stage's parts), jitted as the
  trainer jits it."""
  mesh = parallel.make_mesh(axes, jax.devices()[:n_devices])
  graphdef, abstract_params, _ = nnx.split(nnx.eval_shape(lambda: _create(mcfg)), nnx.Param, ...)
  tx, schedule = optimizer.make_optimizer(cfg.optim, abstract_params, 100)
  abstract = jax.eval_shape(lambda: step_lib.init_state(lambda: _create(mcfg), tx))
  shardings = parallel.tree_shardings(abstract, mesh, min_fsdp_size=256)
  state = jax.jit(lambda: step_lib.init_state(lambda: _create(mcfg), tx),
                  out_shardings=shardings)()
  batch_sharding = parallel.batch_sharding(mesh)
  step = step_lib.jit_train_step(graphdef, tx, schedule, **pretrain.step_parts(cfg, mesh),
                                 state_shardings=shardings, batch_sharding=batch_sharding)
  losses = []
  for _ in range(steps):
    state, metrics = step(state, pipeline.to_global(batch, parallel.batch_sharding(mesh)))
    losses.append(float(metrics["loss"]))
  return jax.device_get(state["params"]), losses, state


def _assert_close(a, b, rtol=2e-4, atol=2e-5):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol)


def test_data_parallel_fsdp_and_chunked_steps_equal_the_single_device_step(setup):
  cfg, mcfg, batch = setup
  ref, ref_losses, _ = _one_step(cfg, mcfg, batch, {"data": 1}, 1)
  dp, dp_losses, _ = _one_step(cfg, mcfg, batch, {"data": 2}, 2)
  np.testing.assert_allclose(dp_losses, ref_losses, rtol=1e-5)
  _assert_close(dp, ref)
  # FSDP with the chunked ring loss in one run (one compile less; the ring loss alone equals
  # the dense loss and its gradients in tests/test_losses.py)
  chunked_cfg = copy.deepcopy(cfg)
  chunked_cfg.loss.chunked = True
  fsdp, fsdp_losses, state = _one_step(chunked_cfg, mcfg, batch, {"data": 1, "fsdp": 2}, 2)
  sharded = [x for x in jax.tree.leaves(state["params"]) if "fsdp" in str(x.sharding.spec)]
  assert sharded  # the FSDP rule really split some parameters
  np.testing.assert_allclose(fsdp_losses, ref_losses, rtol=1e-5)
  _assert_close(fsdp, ref)


def test_loss_falls_when_fitting_one_batch(setup):
  """The deterministic (eval-mode) loss on a batch of 4 distinct random pairs falls as the
  model trains on it (gradients reach both towers and the optimizer applies them)."""
  cfg, mcfg, real = setup
  rng = np.random.default_rng(0)
  batch = {"video": rng.integers(0, 255, real["video"].shape, dtype=np.uint8),
           "frame_mask": np.ones(real["frame_mask"].shape, bool),
           "text_ids": rng.integers(5, mcfg.text.bert.vocab_size,
                                    real["text_ids"].shape).astype(np.int32),
           "text_mask": np.ones(real["text_mask"].shape, np.int32),
           "study": np.arange(4, dtype=np.int32)}
  fit = copy.deepcopy(cfg)
  fit.optim.warmup_steps = 2
  model = nnx.eval_shape(lambda: _create(mcfg))
  model.eval()
  eval_graphdef = nnx.split(model, nnx.Param, ...)[0]

  def eval_loss(state):
    e = pretrain.embed_step(state["params"], state["rest"], batch, graphdef=eval_graphdef,
                            dtype=fit.dtype)
    return float(losses.clip_loss(e["v"], e["t"], jnp.log(14.0), batch["study"])[0])

  _, _, start = _one_step(fit, mcfg, batch, {"data": 2}, 2, steps=0)
  before = eval_loss(start)
  _, _, trained = _one_step(fit, mcfg, batch, {"data": 2}, 2, steps=30)
  after = eval_loss(trained)
  assert after < 0.8 * before, (before, after)


def test_recall_at_k_counts_hits_at_video_and_study_level():
  from echoprime_jax.evaluation.recall import recall_at_k
  rng = np.random.default_rng(0)
  text = rng.normal(size=(4, 8))
  text /= np.linalg.norm(text, axis=1, keepdims=True)
  study = np.array([0, 0, 1, 2, 3, 3])
  video = text[[0, 0, 1, 2, 3, 3]] + 0.01  # every video next to its report
  video /= np.linalg.norm(video, axis=1, keepdims=True)
  out = recall_at_k(video, text[[0, 0, 1, 2, 3, 3]], study, ks=(1,))
  assert out["video_to_report_R@1"] == 1.0 and out["report_to_study_R@1"] == 1.0
  shuffled = recall_at_k(video, text[[1, 1, 2, 3, 0, 0]], study, ks=(1,))
  assert shuffled["video_to_report_R@1"] == 0.0
