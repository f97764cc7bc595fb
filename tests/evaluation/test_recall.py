"""Chunked on-device recall (evaluation/recall.py) against a plain NumPy argsort reference."""

import numpy as np
import pytest

from echoprime_jax.evaluation import recall


def _reference(video, text, study, ks):
  """The full N x S similarity and argsort: small sizes only."""
  studies, first = np.unique(study, return_index=True)
  reports = text[first]
  owner = np.searchsorted(studies, study)
  sim = video @ reports.T
  v_rank = np.argsort(-sim, axis=1, kind="stable")
  t_rank = np.argsort(-sim.T, axis=1, kind="stable")
  mean = np.stack([video[owner == s].mean(0) for s in range(len(studies))])
  mean /= np.linalg.norm(mean, axis=1, keepdims=True)
  ssim = mean @ reports.T

  def own(sim):
    order = np.argsort(-sim, axis=1, kind="stable")
    return np.argmax(order == np.arange(len(sim))[:, None], axis=1)

  out = {}
  for k in ks:
    out[f"video_to_report_R@{k}"] = np.mean([owner[i] in v_rank[i, :k] for i in range(len(video))])
    out[f"report_to_video_R@{k}"] = np.mean([np.any(owner[t_rank[s, :k]] == s)
                                             for s in range(len(studies))])
    out[f"study_to_report_R@{k}"] = np.mean(own(ssim) < k)
    out[f"report_to_study_R@{k}"] = np.mean(own(ssim.T) < k)
  return out


def _embeddings(n, s, d, noise, seed):
  rng = np.random.default_rng(seed)
  text = rng.normal(size=(s, d)).astype(np.float32)
  study = np.sort(rng.integers(0, s, n))
  study[:s] = np.arange(s)  # every study has a video
  video = text[study] + noise * rng.normal(size=(n, d)).astype(np.float32)
  norm = lambda x: (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
  return norm(video), norm(text)[study], study * 7 + 3  # ids need not be 0..S-1


@pytest.mark.parametrize("noise,chunk", [(0.8, 64), (1.5, 1000), (3.0, 7)])
def test_matches_the_argsort_reference(noise, chunk):
  video, text, study = _embeddings(600, 150, 16, noise, seed=int(noise * 10))
  ks = (1, 5, 10)
  out = recall.recall_at_k(video, text, study, ks, chunk=chunk)
  ref = _reference(video, text, study, ks)
  for key, value in ref.items():
    # equal up to a near-tie flipped by another matmul's rounding (not seen here: equal)
    assert out[key] == pytest.approx(value, abs=0.01), key
  assert 0.05 < out["video_to_report_R@10"] < 0.999  # informative: neither chance nor perfect
  assert out["num_studies"] == 150 and out["chance_R@10"] == pytest.approx(10 / 150)


def test_ties_broken_by_key_index():
  keys = np.asarray([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]], np.float32)
  queries = np.asarray([[1.0, 0.0], [1.0, 0.0]], np.float32)
  ranks = recall.own_ranks(queries, keys, np.asarray([0, 1], np.int32),
                           np.asarray([0, 1, 2], np.int32), chunk=4)
  assert np.asarray(ranks).tolist() == [0, 1]  # an equal score at a lower index comes first
