"""2 processes x 1 CPU device (jax.distributed, gloo) train like 1 process x 2 devices.

Each process reads its own slice; together they form the same global batch (rows in another
order, which the loss does not see)."""

import json
import os
import subprocess
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _args(data_dir, tokenizer):
  # No dropout / stochastic depth: their masks depend on a sample's row in the global batch,
  # and 2 processes lay out the same samples in another row order (process-major).
  return ["--config.dropout=0.0", "--config.total_steps=3", "--config.log_every=1", "--config.eval_every=0",
          "--config.checkpoint_every=100", "--config.batch_size=4",
          "--config.data.read_threads=1", f"--config.data.dir={data_dir}",
          f"--config.data.tokenizer={tokenizer}"]


def _losses(workdir):
  rows = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
  return [r["loss"] for r in rows if "loss" in r]


def test_two_processes_match_one_process_with_two_devices(converted, pipeline_data, tmp_path):
  data_dir = converted[0]
  _, enc = pipeline_data
  vocab = tmp_path / "vocab"
  enc.tokenizer.save_pretrained(str(vocab))
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  single = tmp_path / "single"
  subprocess.run([sys.executable, "-m", "echoprime_jax.train", "--config",
                  "configs/pretrain.py:tiny", "--workdir", str(single),
                  *_args(data_dir, vocab)], cwd=ROOT, check=True, capture_output=True,
                 timeout=900, env={**env, "XLA_FLAGS": "--xla_force_host_platform_device_count=2"})
  multi = tmp_path / "multi"
  run = subprocess.run(["bash", "launch/localhost_multiprocess.sh", "2",
                        "configs/pretrain.py:tiny", str(multi), *_args(data_dir, vocab)],
                       cwd=ROOT, capture_output=True, text=True, timeout=900,
                       env={**env, "DEVICES_PER_PROCESS": "1"})
  logs = "".join(open(f"{multi}.process{i}.log").read()[-2000:] for i in range(2)
                 if os.path.exists(f"{multi}.process{i}.log"))
  assert run.returncode == 0, logs
  a, b = _losses(single), _losses(multi)
  assert len(a) == len(b) == 3
  np.testing.assert_allclose(b, a, rtol=1e-5)
