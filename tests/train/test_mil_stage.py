"""MIL stage: learned attention finds the view that carries each section's finding (synthetic
studies in embedding space), section retrieval beats uniform pooling, the loss' masking, the
attention table, exports, and the fixed-table mode."""

import csv
import os

import numpy as np
import pytest
from flax import nnx

from configs import mil as mil_config
from data_prep.views import COARSE_VIEWS
from echoprime_jax import parallel
from echoprime_jax.data.split_embeddings import SplitEmbeddings
from echoprime_jax.inference import attention_table as section_table
from echoprime_jax.inference.load import load_run
from echoprime_jax.inference.mil_pooling import SplitPooler
from echoprime_jax.train.stages import mil as mil_stage

K = len(COARSE_VIEWS)
S = len(section_table.TABLE_SECTIONS)
INFORMATIVE = np.arange(S) % K  # section s's finding is visible in view s % 11 only


def synthetic_split(n_studies: int, seed: int, dim: int = 64) -> SplitEmbeddings:
  """Studies of 4-8 videos (distinct views). Section s has 4 possible findings, each a fixed
  unit vector `proto[s, f]` that is both the text tower's embedding of the finding's text and
  what the video tower sees of it. Only the video of view INFORMATIVE[s] shows the study's
  true finding; every other video shows a *wrong* finding for two random sections, plus
  noise. Uniform pooling is therefore misled; attention on the right view is not. A section
  whose view the study lacks is not reported (as an unassessed structure)."""
  rng = np.random.default_rng(seed)
  proto = np.random.default_rng(123).standard_normal((S, 4, dim))
  proto /= np.linalg.norm(proto, axis=-1, keepdims=True)
  emb, study, views, text, targets = [], [], [], [], []
  for m in range(n_studies):
    finding = rng.integers(0, 4, S)
    vs = rng.choice(K, int(rng.integers(4, 9)), replace=False)
    for k in vs:
      e = 0.5 * rng.standard_normal(dim) / np.sqrt(dim)
      for s in np.flatnonzero(INFORMATIVE == k):
        e += proto[s, finding[s]]
      for s in rng.choice(np.flatnonzero(INFORMATIVE != k), 2, replace=False):
        e += proto[s, (finding[s] + rng.integers(1, 4)) % 4]
      emb.append(e / np.linalg.norm(e))
      study.append(m)
      views.append(k)
    text.append(np.where(np.isin(INFORMATIVE, vs), np.arange(S) * 4 + finding, -1))
    targets.append(proto[np.arange(S), finding])
  n = len(emb)
  return SplitEmbeddings(
      video_embedding=np.asarray(emb, np.float32), video_study=np.asarray(study, np.int32),
      video_view=np.asarray(views, np.int32), video_record=np.arange(n, dtype=np.int64),
      section_embedding=np.asarray(targets, np.float32),
      section_text=np.asarray(text, np.int32),
      study_ids=np.asarray([f"s{m:04d}" for m in range(n_studies)]),
      sections=section_table.TABLE_SECTIONS)


def _config(**overrides):
  cfg = mil_config.get_config("tiny")
  cfg.mil.hidden_dim = 64
  cfg.batch_size = 32
  cfg.total_steps = 400
  cfg.eval_every = 400
  cfg.checkpoint_every = 400
  cfg.log_every = 100
  cfg.eval_batch_size = 32
  cfg.optim.learning_rate = 3e-3
  for k, v in overrides.items():
    cfg[k] = v
  return cfg


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("mil"))
  train_emb, eval_emb = synthetic_split(400, 0), synthetic_split(100, 1)
  mesh = parallel.make_mesh({"data": -1, "fsdp": 1})
  result = mil_stage.train_on_embeddings(_config(), workdir, train_emb, eval_emb, mesh)
  return workdir, result, eval_emb, mesh


def test_attention_concentrates_on_the_informative_view(trained):
  workdir, result, eval_emb, mesh = trained
  # the run as inference loads it (parameters only), pooled as the export pools a split
  run = load_run(workdir, mesh, stage="mil")
  graphdef, params, rest = nnx.split(run.model, nnx.Param, ...)
  out = SplitPooler(graphdef, eval_emb, batch_size=32, max_videos=16, mesh=mesh)(params, rest)
  live = SplitPooler(graphdef, eval_emb, batch_size=32, max_videos=16, mesh=mesh)(
      result.state["params"], result.state["rest"])
  np.testing.assert_array_equal(out["pooled"], live["pooled"])  # the final step was loaded
  hits, total, mass = 0, 0, []
  for m in range(eval_emb.num_studies):
    real = out["video_mask"][m]
    for s in range(S):
      if INFORMATIVE[s] not in out["views"][m][real]:
        continue  # the study lacks the view that shows this section
      top = int(np.argmax(out["attention"][m, s]))
      hits += int(out["views"][m, top] == INFORMATIVE[s])
      total += 1
      mass.append(out["attention"][m, s][real & (out["views"][m] == INFORMATIVE[s])].sum())
  assert total > 500
  # Measured: the largest weight is on the informative view in 1.00 of (study, section) pairs
  # after 400 steps (0.15-0.24 at initialisation; target >= 0.9), holding 0.72 of the mass
  # on average (a study has 4-8 videos).
  assert hits / total >= 0.9, hits / total
  assert np.mean(mass) > 0.5, np.mean(mass)
  # and it is what makes section retrieval work: uniform pooling is misled by the wrong
  # findings the other views carry
  m = result.metrics
  assert m["section_R@1"] > 0.9 and m["section_R@1"] > m["uniform_section_R@1"] + 0.3, m


def test_exported_table_ranks_the_informative_view_first(trained):
  workdir, _, _, _ = trained
  table = section_table.read_csv(os.path.join(workdir, "attention_table.csv"))
  assert table.shape == (S, K)
  np.testing.assert_allclose(table.max(1), 1.0)
  np.testing.assert_allclose(table.min(1), 0.0)
  np.testing.assert_array_equal(np.argmax(table, 1), INFORMATIVE)
  # per-video export: one row per eval video, each section's attention sums to 1 per study
  with open(os.path.join(workdir, "export", "val_attention.csv")) as f:
    rows = list(csv.DictReader(f))
  assert len(rows) == len(trained[2].video_study)
  per_study = {}
  for r in rows:
    per_study.setdefault(r["study_id"], []).append(float(r["Pericardium"]))
  np.testing.assert_allclose([sum(v) for v in per_study.values()], 1.0, rtol=1e-5)
  z = np.load(os.path.join(workdir, "export", "val_sections.npz"))
  assert z["section_embedding"].shape == (100, S, 64)
  np.testing.assert_allclose(np.linalg.norm(z["section_embedding"], axis=-1), 1.0, rtol=1e-5)


def test_fixed_table_mode_evaluates_a_given_csv(trained, tmp_path):
  workdir, result, eval_emb, mesh = trained
  # the oracle table (1 on each section's informative view) must retrieve as well as learned
  oracle = np.zeros((S, K), np.float32)
  oracle[np.arange(S), INFORMATIVE] = 1.0
  path = str(tmp_path / "oracle.csv")
  section_table.write_csv(oracle, path)
  fixed = mil_stage.train_on_embeddings(_config(table=path), str(tmp_path / "run"),
                                        synthetic_split(40, 2), eval_emb, mesh)
  assert fixed.metrics["section_R@1"] > 0.9
  assert fixed.metrics["section_R@1"] > fixed.metrics["uniform_section_R@1"] + 0.3
  assert os.path.isfile(tmp_path / "run" / "export" / "val_sections.npz")


def test_section_recall_counts_distinct_texts_and_skips_uninformative_sections():
  sections = ("A", "B")
  targets = np.zeros((4, 2, 2), np.float32)
  targets[:, 0] = [[1, 0], [0, 1], [1, 0], [0, 1]]  # two distinct texts, each twice
  targets[:, 1] = [1, 0]  # one text for everybody: no information
  text = np.asarray([[0, 5], [1, 5], [0, 5], [-1, 5]], np.int32)
  pooled = np.zeros((4, 2, 2), np.float32)
  pooled[:, 0] = [[0.9, 0.1], [0.8, 0.2], [0.7, 0.3], [0, 1]]  # study 1 picks the wrong text
  r = mil_stage.section_recall(pooled, targets, text, sections)
  assert r["section_queries"] == 3  # section B skipped, study 3 lacks section A
  assert r["section_R@1"] == pytest.approx(2 / 3)
  assert r["chance_section_R@1"] == pytest.approx(0.5)
  assert r["section_R@5"] == 1.0


def test_attention_table_is_relative_to_uniform():
  attention = np.zeros((2, 1, 3), np.float32)
  attention[0, 0] = [0.5, 0.5, 0.0]  # 2 real videos: uniform
  attention[1, 0] = [0.75, 0.25, 0.0]
  views = np.asarray([[0, 1, -1], [0, 2, -1]])
  mask = np.asarray([[True, True, False], [True, True, False]])
  table, count = section_table.mean_attention(attention, views, mask, 4)
  np.testing.assert_allclose(table[0, :3], [1.25, 1.0, 0.5])  # view 0: (1 + 1.5) / 2
  assert table[0, 3] == pytest.approx(0.5)  # never seen: the row minimum
  np.testing.assert_array_equal(count, [2, 1, 1, 0])


def test_section_loss_ignores_absent_sections_and_padding():
  rng = np.random.default_rng(0)
  pooled = rng.standard_normal((4, 3, 8)).astype(np.float32)
  targets = rng.standard_normal((4, 3, 8)).astype(np.float32)
  text = np.asarray([[0, 1, -1], [1, 1, -1], [2, -1, -1], [3, 4, 5]], np.int32)
  valid = np.asarray([True, True, True, False])
  loss, aux = mil_stage.section_loss(pooled, targets, text, np.log(10.0), valid)
  assert float(aux["pairs"]) == 5  # 3 + 2 + 0 present pairs among the valid studies
  changed = pooled.copy()
  changed[3] += 5.0  # padding study
  changed[2, 1] += 5.0  # absent section
  loss2, _ = mil_stage.section_loss(changed, targets, text, np.log(10.0), valid)
  assert float(loss2) == pytest.approx(float(loss), rel=1e-6)
  assert np.isfinite(float(loss)) and float(loss) > 0


def test_cli_on_a_tiny_pretraining_run(tiny_mil_run, tiny_pretrain_run, demo_shards):
  """The stage as the demo runs it (conftest.tiny_mil_run): towers from a pretraining run folder,
  embeddings cached, trained, exported; then the exported table used as a fixed aggregator
  (the cache reused)."""
  import json
  import subprocess
  import sys
  workdir, trained = tiny_mil_run
  assert trained.returncode == 0, trained.stderr[-3000:]
  rows = [json.loads(line) for line in open(workdir / "metrics.jsonl")]
  m = {k[4:]: v for k, v in rows[-1].items() if k.startswith("val/")}
  print(json.dumps(m, indent=1))
  assert m["section_queries"] >= 200  # ~80 validation studies, 3 informative sections
  # Learned attention + projection retrieve the study's own section text better than chance
  # and than the plain mean of its videos (the demo's summary holds it with an interval).
  assert m["section_R@1"] > m["chance_section_R@1"] and m["section_R@1"] > m["uniform_section_R@1"]
  # and the attention reads the effusion where the archive draws it: the Pericardium row's
  # top view shows effusion, and those views weigh more than the rest on average
  # (data_prep.synthetic.FINDING_VIEWS: 4 of the 11 views). Held in every demo run tried
  # (2026-12-02: seeds 0-2, quick and full). Not asserted for the Left Atrium row: its
  # look-alikes barely reach the embeddings (pooling only the LA views gains nothing), so there
  # is little for attention to learn and its top view varies by seed (README, the demo).
  from data_prep import synthetic
  table = section_table.read_csv(str(workdir / "attention_table.csv"))
  row = table[section_table.TABLE_SECTIONS.index("Pericardium")]
  shows = np.isin(COARSE_VIEWS, synthetic.FINDING_VIEWS["pericardial_effusion"])
  assert shows[int(np.argmax(row))], row
  assert row[shows].mean() > row[~shows].mean(), row
  ranks = np.load(workdir / "export" / "val_section_ranks.npz")
  assert len(ranks["rank"]) == m["section_queries"]
  # the export is of the last step, the one evaluated last (the demo selects nothing)
  np.testing.assert_allclose(np.mean(ranks["rank"] < 1), m["section_R@1"])
  np.testing.assert_allclose(np.mean(ranks["uniform_rank"] < 1), m["uniform_section_R@1"])
  for split in ("train", "val"):
    assert os.path.isfile(workdir / "embeddings" / f"{split}.npz")
    assert os.path.isfile(workdir / "export" / f"{split}_attention.csv")
  assert table.shape == (S, K) and np.allclose(table.max(1), 1.0)
  assert len(os.listdir(workdir / "attention")) == 3  # steps 100, 200, 300

  root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  fixed_dir = workdir.parent / (workdir.name + "_fixed")
  os.makedirs(fixed_dir / "embeddings")
  for split in ("train", "val"):  # the same towers and data: the cache carries over
    for ext in ("npz", "json"):
      os.link(workdir / "embeddings" / f"{split}.{ext}", fixed_dir / "embeddings" / f"{split}.{ext}")
  fixed = subprocess.run(
      [sys.executable, "-m", "echoprime_jax.train", "--config", "configs/mil.py:tiny",
       "--workdir", str(fixed_dir), f"--config.data.dir={demo_shards}",
       f"--config.towers_from={tiny_pretrain_run[0]}",
       f"--config.table={workdir / 'attention_table.csv'}"],
      cwd=root, env=env, capture_output=True, text=True, timeout=600)
  assert fixed.returncode == 0, fixed.stderr[-3000:]
  assert "embeddings from the cache" in fixed.stderr
  f = json.loads(fixed.stdout[fixed.stdout.index("{"):])
  assert f["uniform_section_R@1"] == pytest.approx(m["uniform_section_R@1"])
  assert os.path.isfile(fixed_dir / "export" / "val_sections.npz")
