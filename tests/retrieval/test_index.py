"""Exact and ScaNN search: the exact path equals NumPy, ScaNN finds the true neighbours, both
save and load."""

import numpy as np
import pytest

from echoprime_jax.retrieval import search_index as index
from tests.pickle_payload import Payload


def _data(n, d=32, seed=0):
  rng = np.random.default_rng(seed)
  x = rng.standard_normal((n, d)).astype(np.float32)
  return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_exact_index_equals_numpy_across_chunks(tmp_path):
  db, q = _data(1000), _data(37, seed=1)
  ex = index.ExactIndex(db, db_chunk=128, query_chunk=16)  # 8 database chunks, 3 query chunks
  idx, scores = ex.search(q, 10)
  ref = np.argsort(-(q @ db.T), axis=1)[:, :10]
  np.testing.assert_array_equal(idx, ref)
  np.testing.assert_allclose(scores, np.take_along_axis(q @ db.T, ref, 1), rtol=1e-5)
  assert idx.dtype == np.int64 and scores.shape == (37, 10)
  ex.save(str(tmp_path / "ex"))
  again, _ = index.load_index(str(tmp_path / "ex")).search(q, 10)
  np.testing.assert_array_equal(again, idx)
  # k above the database size returns the whole database, padding rows never appear
  small = index.ExactIndex(db[:5], db_chunk=4)
  i5, _ = small.search(q[:2], 10)
  assert i5.shape == (2, 5) and set(i5[0]) == set(range(5))


def _clustered(n, centres, seed, noise=0.6):
  """Points around random unit centres (embeddings are clustered; uniformly random vectors
  have no near neighbours to find)."""
  rng = np.random.default_rng(seed)
  x = centres[rng.integers(0, len(centres), n)]
  x = x + rng.standard_normal(x.shape).astype(np.float32) * noise / np.sqrt(x.shape[1])
  return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_scann_recall_against_exact(tmp_path):
  centres = _data(500, 64, seed=3)
  db, q = _clustered(20000, centres, 1), _clustered(200, centres, 2)
  exact, _ = index.ExactIndex(db).search(q, 10)
  sc = index.ScannIndex.build(db, num_leaves=100, leaves_to_search=10, reorder=100)
  approx, scores = sc.search(q, 10)
  recall = index.recall_at_k(approx, exact, 10)
  assert recall >= 0.97, recall  # measured 0.999 (10 of 100 leaves searched)
  wider, _ = sc.search(q, 10, leaves_to_search=1)  # the knob works: fewer leaves, lower recall
  assert index.recall_at_k(wider, exact, 10) < recall
  assert np.all(np.diff(scores, axis=1) <= 1e-6)  # best first
  sc.save(str(tmp_path / "sc"))
  loaded = index.load_index(str(tmp_path / "sc"))
  np.testing.assert_array_equal(loaded.search(q, 10)[0], approx)
  assert index.build_index(db[:100]).kind == "exact"
  with pytest.raises(ValueError, match="index kind"):
    index.build_index(db, "faiss")


def test_recall_at_k_by_hand():
  assert index.recall_at_k(np.asarray([[1, 2, 3]]), np.asarray([[3, 4, 1]]), 3) == \
      pytest.approx(2 / 3)


def test_planted_pickles_in_a_saved_index_are_refused_and_never_run(tmp_path):
  import pickle
  import shutil
  centres = _data(20, 16, seed=5)
  db = _clustered(2000, centres, 6)
  index.ScannIndex.build(db, num_leaves=20, leaves_to_search=5).save(str(tmp_path / "sc"))
  index.ExactIndex(db).save(str(tmp_path / "ex"))
  marker = tmp_path / "RAN"
  payload = pickle.dumps(Payload(marker))
  cases = {  # where a payload goes -> what the refusal names
      "sc/scann/scann_docids.pkl": "scann_docids.pkl",  # ScaNN's loader would unpickle it
      "sc/extra.pkl": "extra.pkl",
      "ex/database.pkl": "database.pkl"}
  for where, named in cases.items():
    folder = tmp_path / where.split("/")[0]
    trial = tmp_path / "trial"
    shutil.rmtree(trial, ignore_errors=True)
    shutil.copytree(folder, trial)
    (trial / where.split("/", 1)[1]).write_bytes(payload)
    with pytest.raises(ValueError, match=named):
      index.load_index(str(trial))
    assert not marker.exists(), where
  # an assets file that points outside the index is refused too
  trial = tmp_path / "trial"
  shutil.rmtree(trial)
  shutil.copytree(tmp_path / "sc", trial)
  assets = trial / "scann" / "scann_assets.pbtxt"
  assets.write_text(assets.read_text().replace('"dataset.npy"', '"../../elsewhere.npy"'))
  with pytest.raises(ValueError, match="outside the index"):
    index.load_index(str(trial))
  # and the untouched folders still load
  assert index.load_index(str(tmp_path / "sc")).search(db[:3], 5)[0].shape == (3, 5)
  assert index.load_index(str(tmp_path / "ex")).search(db[:3], 5)[0].shape == (3, 5)
  # the payload itself works when unpickled (so the test above can fail)
  pickle.loads(payload).close()
  assert marker.exists()
