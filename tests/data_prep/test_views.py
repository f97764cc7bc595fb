"""View taxonomies: the built-in 58-view file, label resolution, roll-up, bad files."""

import collections

import pytest

from data_prep import views


def test_fine_taxonomy_covers_every_coarse_view_in_both_modes():
  fine = views.fine_taxonomy()
  assert len(fine) == 58 and len(set(fine.views)) == 58
  children = collections.Counter(fine.coarse)
  assert set(children) == set(views.COARSE_VIEWS)  # every coarse view has fine children
  assert all(children[c] >= 2 for c in views.COARSE_VIEWS if c not in ("A5C",))
  # colour-Doppler fine views roll up to the coarse Doppler views (or SSN / subcostal, which
  # have no coarse Doppler class); B-mode ones never do
  import csv
  rows = list(csv.DictReader(open(views.FINE_58)))
  for r in rows:
    if r["mode"] == "bmode":
      assert r["coarse"] not in views.DOPPLER_VIEWS, r
    else:
      assert r["coarse"] in views.DOPPLER_VIEWS + ("SSN", "Subcostal"), r
  assert {r["mode"] for r in rows} == {"bmode", "doppler"}


def test_labels_resolve_in_each_taxonomy():
  coarse, fine = views.coarse_taxonomy(), views.fine_taxonomy()
  assert coarse.index("A4C") == views.COARSE_VIEWS.index("A4C")
  # a fine label counts as its parent for a coarse model ...
  assert coarse.index("PSAX_color_AV") == views.COARSE_VIEWS.index("Doppler_Parasternal_Short")
  assert coarse.index("Subcostal_IVC") == views.COARSE_VIEWS.index("Subcostal")
  # ... a coarse-only label says nothing about the fine class (A4C is itself a fine view)
  assert fine.index("Apical_Doppler") == -1 and fine.index("A4C") == fine.views.index("A4C")
  assert coarse.index("") == -1 and coarse.index("unknown view") == -1
  ids = fine.coarse_ids()
  assert views.COARSE_VIEWS[ids[fine.views.index("A4C_color_MV")]] == "Apical_Doppler"
  assert views.taxonomy("coarse").is_coarse and not views.taxonomy("fine").is_coarse


@pytest.mark.parametrize("text, message", [
    ("view,coarse\nX,A4C\nX,A2C\n", "listed twice"),
    ("view,coarse\nX,A6C\n", "coarse view 'A6C'"),
    ("name,parent\nX,A4C\n", "columns 'view' and 'coarse'"),
    ("view,coarse,mode\nX,A4C,mmode\n", "mode"),
])
def test_bad_taxonomy_files_name_the_file_and_line(tmp_path, text, message):
  path = tmp_path / "t.csv"
  path.write_text(text)
  with pytest.raises(ValueError, match=message) as e:
    views.read_taxonomy(str(path))
  assert "t.csv" in str(e.value)
  with pytest.raises(FileNotFoundError, match="taxonomy"):
    views.taxonomy(str(tmp_path / "missing.csv"))
