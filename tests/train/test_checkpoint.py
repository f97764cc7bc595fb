"""Checkpointer: model state and the Grain iterator restore together, to the identical batch."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from echoprime_jax.data import pipeline
from echoprime_jax.run.checkpoints import Checkpointer

CFG = pipeline.PipelineConfig(batch_size=2, clip_length=4, clip_stride=2, frame_size=64,
                              read_threads=2, read_buffer=4)


def _iterator(index, enc, cfg=CFG):
  return iter(pipeline.clip_dataset(index, "train", enc, cfg, train=True, process_index=0,
                                    process_count=1))


def test_state_and_iterator_resume_exactly(pipeline_data, tmp_path):
  index, enc = pipeline_data
  cfg = CFG
  state = {"params": {"w": jnp.arange(6.0).reshape(2, 3)}, "step": jnp.int32(7)}
  it = _iterator(index, enc, cfg)
  for _ in range(3):
    next(it)
  ckpt = Checkpointer(str(tmp_path / "ckpt"), max_to_keep=2)
  assert ckpt.save(3, state, it)
  ckpt.wait()
  expected = next(it)

  fresh = Checkpointer(str(tmp_path / "ckpt"))
  assert fresh.latest_step() == 3
  it2 = _iterator(index, enc, cfg)
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), state)
  step, restored = fresh.restore(abstract, it2)
  assert step == 3
  np.testing.assert_array_equal(restored["params"]["w"], state["params"]["w"])
  assert int(restored["step"]) == 7
  batch = next(it2)
  assert all(np.array_equal(batch[k], expected[k]) for k in expected)
  fresh.close()
  ckpt.close()


def test_restore_without_a_checkpoint_is_a_clear_error(tmp_path):
  with pytest.raises(FileNotFoundError, match="no checkpoint"):
    Checkpointer(str(tmp_path / "empty")).restore({"w": jax.ShapeDtypeStruct((2,), jnp.float32)})


def test_state_saved_on_two_devices_restores_onto_one(tmp_path):
  from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
  two = Mesh(np.array(jax.devices()[:2]), ("fsdp",))
  state = {"w": jax.device_put(jnp.arange(16.0).reshape(4, 4), NamedSharding(two, P("fsdp"))),
           "b": jax.device_put(jnp.ones(3), NamedSharding(two, P()))}
  ckpt = Checkpointer(str(tmp_path / "ckpt"))
  ckpt.save(1, state)
  ckpt.close()
  one = Mesh(np.array(jax.devices()[:1]), ("data",))
  target = {k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=NamedSharding(one, P()))
            for k, v in state.items()}
  step, restored = Checkpointer(str(tmp_path / "ckpt")).restore(target)
  assert step == 1 and restored["w"].sharding.num_devices == 1
  np.testing.assert_array_equal(restored["w"], np.arange(16.0).reshape(4, 4))


def test_keeps_the_newest_steps_and_the_best_evaluated_one(tmp_path):
  ckpt = Checkpointer(str(tmp_path / "ckpt"), max_to_keep=2, async_save=False,
                      best_metric="R@10")
  scores = {2: 0.9, 4: 0.5, 6: 0.7}  # evaluations at steps 2, 4, 6; the best is the oldest
  for step in range(1, 8):
    metrics = {"R@10": scores[step], "loss": 1.0} if step in scores else None
    ckpt.save(step, {"w": jnp.full((2,), float(step))}, force=True, metrics=metrics)
  assert ckpt.manager.all_steps() == [2, 6, 7]  # best + the newest two
  assert ckpt.best_step() == 2 and ckpt.latest_step() == 7
  step, state = ckpt.restore({"w": jax.ShapeDtypeStruct((2,), jnp.float32)},
                             step=ckpt.best_step())
  assert step == 2 and float(state["w"][0]) == 2.0
  ckpt.close()
  reopened = Checkpointer(str(tmp_path / "ckpt"), max_to_keep=2, best_metric="R@10")
  assert reopened.best_step() == 2  # read back from the saved metrics
  reopened.close()
