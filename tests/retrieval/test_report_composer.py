"""Report composition and kNN measurements: each section takes its own neighbours."""

import numpy as np
import pytest

from echoprime_jax.retrieval import database, report_composer

SECTIONS = ("Left Ventricle", "Left Atrium", "Pericardium")


def _db():
  reports = [
      {"Left Ventricle": "Systolic function is normal. Ejection fraction is 60%.",
       "Pericardium": "No pericardial effusion."},
      {"Left Ventricle": "Systolic function is severely reduced. Ejection fraction is 20%.",
       "Left Atrium": "The left atrium is severely dilated.",
       "Pericardium": "There is a severe pericardial effusion."},
      {"Left Atrium": "Normal left atrial size.",
       "Pericardium": "There is a mild pericardial effusion."},
      {},  # no report: dropped
  ]
  emb = np.eye(4, 8, dtype=np.float32)
  return database.build([f"s{i}" for i in range(4)], emb, reports, index_kind="exact")


def _queries(targets):
  """One query; section j points exactly at candidate targets[j]."""
  q = np.zeros((1, len(SECTIONS), 8), np.float32)
  for j, c in enumerate(targets):
    q[0, j, c] = 1.0
  return q


def test_database_drops_studies_without_reports_and_extracts_labels(tmp_path):
  db = _db()
  assert len(db) == 3 and list(db.study_ids) == ["s0", "s1", "s2"]
  np.testing.assert_array_equal(db.labels["lvef"][:2], [60, 20])
  assert np.isnan(db.labels["lvef"][2])
  np.testing.assert_array_equal(db.labels["pericardial_effusion"], [0, 3, 1])
  from echoprime_jax.retrieval import labels
  db.save(str(tmp_path / "db"), labels.DEFAULT_RULES)
  again = database.CandidateDatabase.load(str(tmp_path / "db"))
  np.testing.assert_array_equal(again.labels["pericardial_effusion"], [0, 3, 1])
  assert again.sections[1]["Left Atrium"].startswith("The left atrium")
  np.testing.assert_array_equal(again.index.search(_queries([1, 1, 1])[0], 1)[0][:, 0], [1] * 3)


def test_each_measurement_reads_its_own_sections_neighbours():
  db = _db()
  # LV -> candidate 0 (EF 60, no effusion), LA -> 1, Pericardium -> 2 (mild effusion)
  q = _queries([0, 1, 2])
  nbrs, _ = report_composer.section_neighbours(q, db, 3)
  m = report_composer.measure(nbrs, db, SECTIONS, k=1)[0]
  assert m["lvef"]["value"] == 60.0 and m["lvef"]["section"] == "Left Ventricle"
  assert m["left_atrium_dilation"]["grade"] == "severe"  # candidate 1's atrium
  assert m["pericardial_effusion"]["grade"] == "mild"  # candidate 2's pericardium, not 0's
  # a permutation of the sections' targets moves each measurement with its own section only
  m2 = report_composer.measure(report_composer.section_neighbours(_queries([1, 2, 0]), db, 3)[0],
                               db, SECTIONS, k=1)[0]
  assert m2["lvef"]["value"] == 20.0 and m2["pericardial_effusion"]["grade"] == "none"
  assert m2["left_atrium_dilation"]["grade"] == "none"


def test_knn_averages_and_severity_distribution():
  db = _db()
  nbrs, _ = report_composer.section_neighbours(_queries([0, 1, 1]), db, 3)
  m = report_composer.measure(nbrs, db, SECTIONS, k=3,
                              thresholds={"lv_systolic_dysfunction": 0.4})[0]
  assert m["lvef"]["value"] == pytest.approx(40.0)  # (60 + 20) / 2: candidate 2 states none
  assert m["lvef"]["neighbours"] == 2
  assert m["lv_systolic_dysfunction"]["probability"] == pytest.approx(0.5)
  assert m["lv_systolic_dysfunction"]["positive"] is True  # threshold 0.4
  dist = m["pericardial_effusion"]["distribution"]
  assert dist == pytest.approx({"none": 1 / 3, "mild": 1 / 3, "moderate": 0.0, "severe": 1 / 3})
  assert m["pericardial_effusion"]["expected_grade"] == pytest.approx(4 / 3)


def test_compose_takes_the_nearest_candidate_that_has_the_section():
  db = _db()
  # LA query points at candidate 0, which has no atrium text: the next neighbour that has it
  nbrs, _ = report_composer.section_neighbours(_queries([0, 0, 2]), db, 3)
  out = report_composer.compose(nbrs, db, SECTIONS)[0]
  assert out["sources"]["Left Ventricle"] == 0 and out["sources"]["Pericardium"] == 2
  assert out["sources"]["Left Atrium"] in (1, 2) and out["sections"]["Left Atrium"]
  assert list(out["sections"]) == ["Left Ventricle", "Left Atrium", "Pericardium"]


def test_section_matching_searches_each_sections_own_embeddings(tmp_path):
  reports = [r for r in [
      {"Left Ventricle": "Ejection fraction is 60%.", "Pericardium": "No pericardial effusion."},
      {"Left Ventricle": "Ejection fraction is 20%.", "Left Atrium": "Normal left atrial size."},
      {"Left Atrium": "The left atrium is severely dilated.",
       "Pericardium": "There is a severe pericardial effusion."}]]
  sec = np.zeros((3, 3, 8), np.float32)
  sec[0, 0, 0] = sec[0, 2, 1] = 1.0  # candidate 0: LV along axis 0, pericardium along 1
  sec[1, 0, 2] = sec[1, 1, 3] = 1.0
  sec[2, 1, 4] = sec[2, 2, 5] = 1.0
  db = database.build(["a", "b", "c"], np.eye(3, 8, dtype=np.float32), reports,
                      index_kind="exact", section_names=SECTIONS, section_embeddings=sec)
  from echoprime_jax.retrieval import labels
  db.save(str(tmp_path / "db"), labels.DEFAULT_RULES)
  db = database.CandidateDatabase.load(str(tmp_path / "db"))
  q = np.zeros((1, 3, 8), np.float32)
  q[0, 0, 2] = q[0, 1, 4] = q[0, 2, 1] = 1.0  # LV like b's, LA like c's, pericardium like a's
  nbrs, _ = report_composer.section_neighbours(q, db, 5, match="section", section_names=SECTIONS)
  assert nbrs.shape == (1, 3, 5)
  assert nbrs[0, 0, 0] == 1 and nbrs[0, 1, 0] == 2 and nbrs[0, 2, 0] == 0
  assert (nbrs[0, :, 2:] == -1).all()  # each section has 2 candidates: the rest is padding
  m = report_composer.measure(nbrs, db, SECTIONS, k=1)[0]
  assert m["lvef"]["value"] == 20.0 and m["left_atrium_dilation"]["grade"] == "severe"
  assert m["pericardial_effusion"]["grade"] == "none"
  m5 = report_composer.measure(nbrs, db, SECTIONS, k=5)[0]  # padding rows are ignored
  assert m5["lvef"]["neighbours"] == 2 and m5["lvef"]["value"] == pytest.approx(40.0)


def test_consensus_composition_takes_the_neighbourhoods_medoid():
  texts = ["Systolic function is normal.", "Systolic function is severely reduced.",
           "Systolic function is normal.", "Systolic function is normal."]
  reports = [{"Left Ventricle": t} for t in texts]
  # section text embeddings: the three "normal" texts agree, the reduced one is apart
  sec = np.zeros((4, 1, 4), np.float32)
  sec[[0, 2, 3], 0, 0] = 1.0
  sec[1, 0, 1] = 1.0
  db = database.build([f"s{i}" for i in range(4)], np.eye(4, dtype=np.float32), reports,
                      index_kind="exact", section_names=("Left Ventricle",),
                      section_embeddings=sec)
  # neighbours, nearest first: the outlier 1, then 2, 0, 3
  nbrs = np.asarray([[[1, 2, 0, 3]]])
  nearest = report_composer.compose(nbrs, db, ("Left Ventricle",))[0]
  assert nearest["sources"]["Left Ventricle"] == 1  # EchoPrime's rule: the first
  medoid = report_composer.compose(nbrs, db, ("Left Ventricle",), consensus=3)[0]
  assert medoid["sources"]["Left Ventricle"] in (2, 0)
  assert medoid["sections"]["Left Ventricle"] == "Systolic function is normal."
  # a pool of two has no majority: the nearest stays
  two = report_composer.compose(nbrs, db, ("Left Ventricle",), consensus=2)[0]
  assert two["sources"]["Left Ventricle"] == 1
  with pytest.raises(ValueError, match="consensus"):
    report_composer.compose(nbrs, db, ("Left Ventricle",), consensus=0)


def test_a_database_is_written_whole_and_a_mixed_one_is_refused(tmp_path):
  """The folder is replaced only whole (and only with overwrite); one assembled from two
  builds (a crashed rebuild in older versions) is refused with what disagrees."""
  import shutil
  from echoprime_jax.retrieval import labels
  reports = [{"Left Ventricle": f"Ejection fraction is {e}%.", "Pericardium": "No effusion."}
             for e in (60, 20, 35, 50)]
  sec = np.random.default_rng(0).standard_normal((4, 3, 8)).astype(np.float32)
  big = database.build(["a", "b", "c", "d"], np.eye(4, 8, dtype=np.float32), reports,
                       index_kind="exact", section_names=SECTIONS, section_embeddings=sec)
  small = database.build(["a", "b", "c"], np.eye(3, 8, dtype=np.float32), reports[:3],
                         index_kind="exact", section_names=SECTIONS,
                         section_embeddings=sec[:3])
  big.save(str(tmp_path / "db"), labels.DEFAULT_RULES)
  with pytest.raises(FileExistsError, match="--overwrite"):
    small.save(str(tmp_path / "db"), labels.DEFAULT_RULES)
  assert len(database.CandidateDatabase.load(str(tmp_path / "db"))) == 4  # untouched
  small.save(str(tmp_path / "db"), labels.DEFAULT_RULES, overwrite=True)
  assert len(database.CandidateDatabase.load(str(tmp_path / "db"))) == 3
  assert sorted(p.name for p in tmp_path.iterdir()) == ["db"]  # no temporary sibling left
  # old section indexes beside new candidates: refused, naming what disagrees
  small.save(str(tmp_path / "mixed"), labels.DEFAULT_RULES)
  big.save(str(tmp_path / "other"), labels.DEFAULT_RULES)
  shutil.rmtree(tmp_path / "mixed" / "index")
  shutil.copytree(tmp_path / "other" / "index", tmp_path / "mixed" / "index")
  with pytest.raises(ValueError, match=r"disagree with database.json .*'index': 4"):
    database.CandidateDatabase.load(str(tmp_path / "mixed"))
  # a folder we did not write is never replaced
  (tmp_path / "notes").mkdir()
  (tmp_path / "notes" / "mine.txt").write_text("x")
  with pytest.raises(ValueError, match="not written by echoprime-jax"):
    small.save(str(tmp_path / "notes"), labels.DEFAULT_RULES, overwrite=True)
  assert (tmp_path / "notes" / "mine.txt").read_text() == "x"
