"""Test-wide settings (deterministic CPU maths, two host devices, a compilation cache shared
with the trainer processes the tests start) and the shared synthetic archive fixtures (made
once per session, only when a test asks for them)."""

import atexit
import os
import shutil
import tempfile

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=2")
# Several tests start the trainer more than once on the same program (kill and resume,
# 1 vs 2 processes): XLA:CPU takes ~45 s to compile the tiny train step, so later processes
# load it from JAX's persistent cache. A fresh folder per session: never stale, never shared.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  _cache = tempfile.mkdtemp(prefix="echoprime-jax-cache-")
  atexit.register(shutil.rmtree, _cache, ignore_errors=True)
  os.environ["JAX_COMPILATION_CACHE_DIR"] = _cache

from echoprime_jax.runtime import xla_flags  # noqa: E402

xla_flags.apply()

import jax  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")

import pydicom  # noqa: E402
import pytest  # noqa: E402

from data_prep import synthetic  # noqa: E402
from tests.archive import convert_archive  # noqa: E402


@pytest.fixture(scope="session")
def archive(tmp_path_factory):
  """6 synthetic studies (96x128 clips and stills) + a text file, a truncated file, an empty
  file, a zero-frame file, a CT image and an oversized file."""
  root = tmp_path_factory.mktemp("archive")
  synthetic.write_archive(str(root), studies=6, seed=3, frames=10, size=(96, 128), progress=False)
  junk = root / "dicom" / "junk"
  junk.mkdir()
  (junk / "notes.txt").write_text("Patient: " + "not an image")
  good = next((root / "dicom" / "study_00000").glob("00.dcm")).read_bytes()
  (junk / "truncated.dcm").write_bytes(good[: len(good) // 2])
  (junk / "empty.dcm").write_bytes(b"")
  ds = pydicom.dcmread(root / "dicom" / "study_00000" / "00.dcm")
  ds.NumberOfFrames = 0
  ds.save_as(junk / "zero_frames.dcm")
  ds = pydicom.dcmread(root / "dicom" / "study_00000" / "00.dcm")
  ds.Modality, ds.SOPClassUID = "CT", "1.2.840.10008.5.1.4.1.1.2"
  ds.save_as(junk / "ct.dcm")
  (junk / "huge.dcm").write_bytes(good + b"\0" * (3 << 20))  # over the test's 3 MiB limit
  return root


@pytest.fixture(scope="session")
def converted(archive, tmp_path_factory):
  """(shard folder, manifest rows) of the archive converted with 2 worker processes."""
  out = tmp_path_factory.mktemp("shards")
  return out, convert_archive(archive, out, workers=2)


@pytest.fixture(scope="session")
def pipeline_data(converted, tmp_path_factory):
  """(ShardIndex, ReportEncoder) over the converted archive; WordPiece trained on its reports."""
  import pyarrow.parquet as pq
  from echoprime_jax.data import tokenizer
  from echoprime_jax.data.shards import ShardIndex
  out, _ = converted
  texts = [r["report"] for r in pq.read_table(out / "studies.parquet").to_pylist()]
  tok = tokenizer.train_wordpiece(texts, str(tmp_path_factory.mktemp("tok")), vocab_size=400)
  return ShardIndex(str(out)), tokenizer.ReportEncoder(tok, max_len=64, section_len=16)


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _clean_env() -> dict:
  """The environment of a CLI as a user runs it: one process, one CPU device (both cores in
  XLA's intra-op pool; two 1-core devices would run the tiny step ~1.5x slower)."""
  return {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}


# -- the quick demo (`python -m echoprime_jax.demo --quick`): the learning tests and every later
# stage share its folders. The suite runs on two pytest-xdist workers (pyproject.toml:
# `-n 2 --dist loadgroup`); every test that uses the demo's folders is put in one group, so
# one worker runs the chain once while the other runs everything else. Each fixture advances the
# same demo folder to one stage; stages already done are reused, so the whole chain runs once
# per session.


@pytest.fixture(scope="session")
def demo_dir(tmp_path_factory):
  return tmp_path_factory.mktemp("demo")


def _demo(demo_dir, until: str):
  import subprocess
  import sys
  run = subprocess.run([sys.executable, "-m", "echoprime_jax.demo", "--workdir", str(demo_dir),
                        "--quick", "--until", until], cwd=ROOT, env=_clean_env(),
                       capture_output=True, text=True, timeout=1800)
  assert run.returncode == 0, f"demo up to {until}: " + run.stderr[-4000:]
  return run


@pytest.fixture(scope="session")
def demo_archive(demo_dir):
  """The demo's synthetic archive: 160 studies (DICOM folders, reports, ground truth)."""
  _demo(demo_dir, "archive")
  return demo_dir / "archive"


@pytest.fixture(scope="session")
def demo_shards(demo_archive, demo_dir):
  """The demo's shards of `demo_archive` (64 px, 50/50 train/val by patient): enough
  studies for the learning tests (recall, views)."""
  _demo(demo_dir, "shards")
  return demo_dir / "shards"


@pytest.fixture(scope="session")
def tiny_pretrain_run(demo_shards, demo_dir):
  """(workdir, CompletedProcess) of the demo's tiny pretraining (500 steps, evaluated every
  100): the recall test reads its metrics, later stages its towers."""
  return demo_dir / "pretrain", _demo(demo_dir, "pretrain")


@pytest.fixture(scope="session")
def tiny_views_run(tiny_pretrain_run, demo_dir):
  """(workdir, CompletedProcess) of the demo's tiny view classifier (60 epochs)."""
  return demo_dir / "views", _demo(demo_dir, "views")


@pytest.fixture(scope="session")
def tiny_mil_run(tiny_views_run, demo_dir):
  """(workdir, CompletedProcess) of the demo's tiny MIL stage (300 steps, evaluated every 100)
  on the pretraining run's towers."""
  return demo_dir / "mil", _demo(demo_dir, "mil")


@pytest.fixture(scope="session")
def demo_run(tiny_mil_run, demo_dir):
  """(workdir, CompletedProcess) of the whole quick demo (export, database, interpret, probes
  and the summary after the training stages)."""
  return demo_dir, _demo(demo_dir, "probes")


_DEMO_FIXTURES = {"demo_dir", "demo_archive", "demo_shards", "tiny_pretrain_run",
                  "tiny_views_run", "tiny_mil_run", "demo_run"}


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
  """Tests on the demo's folders share one xdist group (one worker, one demo per session)."""
  for item in items:
    if _DEMO_FIXTURES & set(getattr(item, "fixturenames", ())):
      item.add_marker(pytest.mark.xdist_group("demo"))
