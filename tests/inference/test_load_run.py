"""`load_run`: a run folder's model from its parameters alone, in evaluation mode, equal to the
trained one; no optimizer is built on the way."""

import numpy as np
import optax
import pytest
from flax import nnx

from echoprime_jax import parallel
from echoprime_jax.inference.load import load_run
from echoprime_jax.inference.mil_pooling import SplitPooler, pool_study
from echoprime_jax.train.stages import mil as mil_stage
from tests.train.test_mil_stage import _config, synthetic_split


def test_a_run_loads_from_its_parameters_alone(tmp_path, monkeypatch):
  mesh = parallel.make_mesh({"data": -1, "fsdp": 1})
  emb = synthetic_split(48, 0)
  result = mil_stage.train_on_embeddings(
      _config(total_steps=10, eval_every=10, checkpoint_every=10, log_every=10),
      str(tmp_path / "run"), emb, synthetic_split(32, 1), mesh)

  def no_optimizer(*args, **kwargs):
    raise AssertionError("an optimizer was built while loading a run")
  for name in ("adamw", "adam", "chain", "sgd", "multi_transform", "MultiSteps"):
    monkeypatch.setattr(optax, name, no_optimizer)
  run = load_run(str(tmp_path / "run"), mesh)
  assert run.stage == "mil" and run.step == 10 and run.tokenizer is None
  assert run.config.towers.embed_dim == 64
  with pytest.raises(ValueError, match="stage 'mil', expected 'views'"):
    load_run(str(tmp_path / "run"), mesh, stage="views")

  graphdef, params, rest = nnx.split(run.model, nnx.Param, ...)
  pooler = SplitPooler(graphdef, emb, batch_size=16, max_videos=16, mesh=mesh)
  loaded = pooler(params, rest)
  trained = pooler(result.state["params"], result.state["rest"])
  np.testing.assert_array_equal(loaded["pooled"], trained["pooled"])
  # one study through the plain function equals that study in the split's pass (every video
  # attended: the synthetic studies have at most 8)
  rows = emb.videos_of()[3]
  pooled, attention = pool_study(run.model, emb.video_embedding[rows], emb.video_view[rows])
  np.testing.assert_allclose(pooled, loaded["pooled"][3], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(attention, loaded["attention"][3][:, :len(rows)], rtol=1e-5,
                             atol=1e-7)
