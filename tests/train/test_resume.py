"""Kill -9 mid-run, resume: the final parameters are bit-identical to an uninterrupted run."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import orbax.checkpoint as ocp

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _command(workdir, data_dir, *extra):
  return [sys.executable, "-m", "echoprime_jax.train", "--config", "configs/pretrain.py:tiny",
          "--workdir", str(workdir), f"--config.data.dir={data_dir}",
          "--config.total_steps=6", "--config.checkpoint_every=2", "--config.eval_every=0",
          "--config.log_every=2", "--config.data.read_threads=1", "--config.batch_size=4",
          "--config.data.augment=True", *extra]  # augmentation draws must resume too


def _final_params(workdir):
  step = os.path.join(workdir, "checkpoints", "6")
  params = ocp.StandardCheckpointer().restore(os.path.join(step, "params"))
  return params, ocp.StandardCheckpointer().restore(os.path.join(step, "train_state"))["opt_state"]


def _error(stderr: str) -> str:
  """The end of stderr before any interpreter-shutdown noise (coroutines closed at exit print
  "Exception ignored in" tracebacks after the real one)."""
  return stderr.split("Exception ignored in")[0][-4000:]


def _leaves(tree):
  import jax
  return jax.tree.leaves(tree)


def test_kill_9_and_resume_is_bit_exact(converted, tmp_path):
  data_dir = converted[0]
  # No shared compilation cache here: a run killed mid-way must not be able to leave anything
  # behind that the resumed run reads, other than its checkpoints.
  env = {k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"}
  env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
  straight = tmp_path / "straight"
  subprocess.run(_command(straight, data_dir), cwd=ROOT, env=env, check=True,
                 capture_output=True, timeout=900)

  # Both runs read text with the same vocabulary directory (the vocabulary learner's own
  # determinism is tests/data/test_wordpiece_vocab.py's question, not this one's).
  vocab = f"--config.data.tokenizer={straight / 'tokenizer'}"
  killed = tmp_path / "killed"
  proc = subprocess.Popen(_command(killed, data_dir, vocab), cwd=ROOT, env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  deadline = time.time() + 900
  while not (killed / "checkpoints" / "2").is_dir():  # a finished (renamed) step folder
    assert proc.poll() is None and time.time() < deadline, "run ended before checkpoint 2"
    time.sleep(0.2)
  os.kill(proc.pid, signal.SIGKILL)
  proc.wait()
  assert not (killed / "checkpoints" / "6").exists()
  resumed = subprocess.run(_command(killed, data_dir, vocab), cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=900)
  assert resumed.returncode == 0, _error(resumed.stderr)

  a, b = _final_params(straight), _final_params(killed)
  for x, y in zip(_leaves(a), _leaves(b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  log = (killed / "metrics.jsonl").read_text()
  assert '"step": 6' in log

  # the same folder under another config is refused: one line, exit 2, nothing touched
  steps, recorded = sorted(os.listdir(killed / "checkpoints")), (killed / "config.json").read_text()
  refused = subprocess.run(_command(killed, data_dir, vocab, "--config.optim.learning_rate=0.5"),
                           cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
  assert refused.returncode == 2, _error(refused.stderr)
  assert "differing: optim.learning_rate 0.0003 -> 0.5" in refused.stderr
  assert "Traceback" not in refused.stderr
  assert sorted(os.listdir(killed / "checkpoints")) == steps
  assert (killed / "config.json").read_text() == recorded
