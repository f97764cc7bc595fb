"""The anatomical-attention table: CSV round trip in EchoPrime's layout, pooling by hand."""

import csv

import numpy as np
import pytest

from data_prep.views import COARSE_VIEWS
from echoprime_jax.inference import attention_table as section_table


def _table(seed=0):
  raw = np.random.default_rng(seed).random((15, 11))
  return section_table.min_max_rows(raw)


def test_min_max_rows():
  t = section_table.min_max_rows(np.asarray([[2.0, 4.0, 3.0], [1.0, 1.0, 1.0]]))
  np.testing.assert_allclose(t, [[0.0, 1.0, 0.5], [1.0, 1.0, 1.0]])


def test_csv_round_trip_in_echoprime_layout(tmp_path):
  table = _table()
  path = tmp_path / "weights.csv"
  section_table.write_csv(table, str(path))
  rows = list(csv.reader(open(path)))
  assert rows[0] == ["Section", *COARSE_VIEWS]
  assert [r[0] for r in rows[1:]] == list(section_table.TABLE_SECTIONS)
  assert len(rows) == 16 and "Postoperative Findings" not in {r[0] for r in rows}
  np.testing.assert_array_equal(section_table.read_csv(str(path)), table)


def test_columns_and_rows_are_matched_by_name(tmp_path):
  table = _table(1)
  path = tmp_path / "shuffled.csv"
  order = list(reversed(range(11)))
  with open(path, "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["Section", *(COARSE_VIEWS[i] for i in order)])
    for s in reversed(range(15)):
      w.writerow([section_table.TABLE_SECTIONS[s], *(float(table[s, i]) for i in order)])
  np.testing.assert_array_equal(section_table.read_csv(str(path)), table)


@pytest.mark.parametrize("content, reason", [
    ("View,A2C\n", "header"),
    ("Section," + ",".join(COARSE_VIEWS[:-1]) + "\n", "Subcostal"),
    ("Section," + ",".join(COARSE_VIEWS) + "\nLeft Ventricle," + ",".join(["1"] * 11) + "\n",
     "no row for the sections"),
    ("Section," + ",".join(COARSE_VIEWS) + "\nLeft Ventricle," + ",".join(["x"] * 11) + "\n",
     "line 2"),
])
def test_bad_csv_names_the_file_and_the_reason(tmp_path, content, reason):
  path = tmp_path / "bad.csv"
  path.write_text(content)
  with pytest.raises(ValueError, match=f"bad.csv.*{reason}"):
    section_table.read_csv(str(path))


def test_pooling_equals_a_hand_computation():
  rng = np.random.default_rng(2)
  table = _table(3)
  emb = rng.standard_normal((2, 4, 5)).astype(np.float32)
  views = np.asarray([[2, 2, 7, -1], [0, 10, 3, 3]])
  mask = np.asarray([[True, True, True, True], [True, True, False, False]])
  out = np.asarray(section_table.pool(emb, views, mask, table))
  assert out.shape == (2, 15, 5)
  for b in range(2):
    for s in range(15):
      acc = np.zeros(5)
      for v in range(4):
        if mask[b, v] and views[b, v] >= 0:
          acc += table[s, views[b, v]] * emb[b, v]
      norm = np.linalg.norm(acc)
      np.testing.assert_allclose(out[b, s], acc / norm if norm else acc, rtol=1e-5, atol=1e-6)


def test_video_features_are_embedding_plus_one_hot_view():
  emb = np.ones((3, 512), np.float32)
  feats = np.asarray(section_table.video_features(emb, np.asarray([0, 10, -1])))
  assert feats.shape == (3, 523)
  np.testing.assert_array_equal(feats[:, 512:].argmax(1)[:2], [0, 10])
  assert feats[2, 512:].sum() == 0 and feats[0, 512:].sum() == 1
