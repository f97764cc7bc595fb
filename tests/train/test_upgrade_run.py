"""A run folder from before parameters were saved apart: inference refuses it with the command
that converts it; the conversion keeps the old files and the model loads identically."""

import json
import os
import shutil

import jax
import numpy as np
import pytest
from flax import nnx

from echoprime_jax import parallel
from echoprime_jax.inference.load import load_run
from echoprime_jax.inference.mil_pooling import SplitPooler
from echoprime_jax.run.checkpoints import LegacyCheckpointError
from echoprime_jax.train import upgrade_run
from echoprime_jax.train.stages import mil as mil_stage
from tests.train.test_mil_stage import _config, synthetic_split


def _legacy_copy(workdir, result, dest):
  """The run as the older version wrote it: one `state` item per step, config.json in the
  older field names, no run.json."""
  import orbax.checkpoint as ocp
  os.makedirs(dest)
  cfg = json.loads(open(os.path.join(workdir, "config.json")).read())
  cfg["towers"]["video"]["num_outputs"] = cfg["towers"].pop("embed_dim")
  cfg["towers"]["text"]["out_dim"] = cfg["towers"]["video"]["num_outputs"]
  with open(os.path.join(dest, "config.json"), "w") as f:
    json.dump(cfg, f)
  manager = ocp.CheckpointManager(os.path.join(dest, "checkpoints"))
  manager.save(result.step, args=ocp.args.Composite(state=ocp.args.StandardSave(result.state)),
               metrics=result.metrics)
  manager.wait_until_finished()
  manager.close()


def test_legacy_run_is_refused_then_converted(tmp_path):
  mesh = parallel.make_mesh({"data": -1, "fsdp": 1})
  workdir = str(tmp_path / "run")
  emb = synthetic_split(64, 0)
  result = mil_stage.train_on_embeddings(_config(total_steps=20, eval_every=20,
                                                 checkpoint_every=20, log_every=10),
                                         workdir, emb, synthetic_split(32, 1), mesh)
  legacy = str(tmp_path / "legacy")
  _legacy_copy(workdir, result, legacy)
  with pytest.raises(LegacyCheckpointError, match="python -m echoprime_jax.train.upgrade_run"):
    load_run(legacy, mesh)

  assert upgrade_run.main([legacy]) == 0
  assert os.path.isdir(os.path.join(legacy, "checkpoints.layout1", "20", "state"))  # kept
  assert os.path.isfile(os.path.join(legacy, "config.layout1.json"))
  assert upgrade_run.main([legacy]) == 2  # already current: refused, nothing touched
  graphdef, params, rest = nnx.split(load_run(legacy, mesh, stage="mil").model, nnx.Param, ...)
  pooler = SplitPooler(graphdef, emb, batch_size=32, max_videos=16, mesh=mesh)
  np.testing.assert_array_equal(pooler(params, rest)["pooled"],
                                pooler(jax.device_get(result.state["params"]),
                                       result.state["rest"])["pooled"])
  shutil.rmtree(legacy)
