"""EchoPrime's release imported and interpreted in JAX, against an independent PyTorch reference
of the released inference (`echoprime_reference.py`) on a fake release in the published formats
(`fake_release.py`): the same study embedding, views, candidate per section, report text and
phenotypes, by section name and with the released positional pairing."""

import csv
import json
import math
import os
import pickle
import shutil

import numpy as np
import pytest
import torch

from echoprime_jax import interpret as interpret_cli
from echoprime_jax.release import __main__ as release_cli
from echoprime_jax.release import interpretation as release_lib
from tests.pickle_payload import Payload
from tests.release import echoprime_reference, fake_release
from tests.video_files import speckle_cone, write_video

pytestmark = pytest.mark.xdist_group("release")  # one worker builds the release once

K = 50
SCORE_TOL = 1e-5  # float32 dot products of 512-d unit vectors (|error| ~ 512 * 2^-24 * few)


@pytest.fixture(scope="module")
def release(tmp_path_factory):
  """(release folder, imported folder, reference, study folder)."""
  root = tmp_path_factory.mktemp("release")
  towers = fake_release.write_release(str(root / "EchoPrime"), candidates=3000, seed=0)
  out = root / "imported"
  code = release_cli.main(["import", "--release", str(root / "EchoPrime"), "--out", str(out),
                           "--trust-pickles"])
  assert code == 0
  study = root / "DOE_JOHN_study"
  study.mkdir()
  for i, kind in enumerate(("mp4", "avi", "mp4")):  # EchoPrime's inference reads MP4
    video, _ = speckle_cone(frames=40 if i else 20, h=160, w=160, seed=10 + i)
    write_video(study / f"clip_{i}.{kind}", video, kind, fps=30)
  reference = echoprime_reference.EchoPrimeReference(str(root / "EchoPrime"), towers["video"],
                                                     towers["views"])
  return root / "EchoPrime", out, reference, study


@pytest.fixture(scope="module")
def both(release):
  """Our stepwise path and the reference's, on the same preprocessed clips."""
  from echoprime_jax.inference import study_reader
  _, imported, reference, study = release
  read = study_reader.read_study(str(study), release_lib.FRAME_SIZE, progress=False,
                                 preset="echoprime")
  clips = [v.clip(release_lib.CLIP_FRAMES, release_lib.CLIP_STRIDE) for v in read.videos]
  clips, masks = np.stack([c for c, _ in clips]), np.stack([m for _, m in clips])
  from echoprime_jax import parallel
  ours_emb, logits = release_lib.study_features(str(imported), clips, masks,
                                                parallel.make_mesh({"data": -1}))
  ref_emb, ref_views = reference.encode(clips, masks)
  return {"clips": clips, "masks": masks, "emb": ours_emb, "logits": logits,
          "ref_emb": ref_emb.numpy(), "ref_views": ref_views.numpy()}


def test_the_study_embedding_and_views_match_the_reference(both):
  assert both["masks"][0].sum() == 10 and both["masks"][1].all()  # a short clip zero-padded
  np.testing.assert_allclose(both["emb"], both["ref_emb"], atol=1e-4, rtol=0)
  assert np.array_equal(both["logits"].argmax(1), both["ref_views"])


def _near_tie(scores: np.ndarray, a: int, b: int) -> bool:
  return abs(float(scores[a]) - float(scores[b])) < SCORE_TOL


@pytest.mark.parametrize("compat", [False, True])
def test_report_and_phenotypes_match_the_reference(release, both, compat):
  _, imported, reference, _ = release
  views = both["ref_views"]
  ours_sections = release_lib.section_embeddings(both["emb"], views,
                                                 release_lib.ImportedRelease.load(
                                                     str(imported)).table)
  ref_sections = reference.section_embeddings(torch.from_numpy(both["ref_emb"]),
                                              torch.from_numpy(views))
  np.testing.assert_allclose(ours_sections, ref_sections.numpy(), atol=1e-5, rtol=0)
  result = release_lib.interpret(ours_sections, release_lib.ImportedRelease.load(str(imported)),
                                 k=K, compat=compat)
  ref_text, ref_chosen = reference.generate_report(ref_sections)
  ref_metrics, similarities = reference.predict_metrics(ref_sections, K, by_name=not compat)
  similarities = similarities.numpy()
  # the same candidate per section (a different one only at a float32 tie with it)
  chosen = {name: int(src["study_id"].split()[-1]) for name, src in
            result["report_sources"].items()}
  assert set(chosen) == set(ref_chosen) == set(reference.sections)
  j = {name: i for i, name in enumerate(reference.sections)}
  ties = [n for n in chosen if chosen[n] != ref_chosen[n]]
  assert all(_near_tie(similarities[j[n]], chosen[n], ref_chosen[n]) for n in ties)
  if not ties:
    assert result["report_text"] == ref_text
  # phenotypes: the same value, unless the 50th / 51st neighbours tie in float32
  measured = result["measurements"]
  assert set(measured) == set(ref_metrics) and len(ref_metrics) == 21
  for name, expected in ref_metrics.items():
    m = measured[name]
    got = m["value"] if m["mode"] == "regression" else m["probability"]
    if math.isnan(expected):
      assert math.isnan(got), name
      continue
    if abs(got - expected) > 1e-4:
      section = m["section"]
      order = np.sort(similarities[j[section]])[::-1]
      assert order[K - 1] - order[K] < SCORE_TOL, (name, got, expected)
  # pairing: by name each phenotype reads its own section; compat, the released position
  for position, (section, names) in enumerate(fake_release.SECTION_PHENOTYPES.items()):
    for name in names:
      assert measured[name]["section"] == (reference.sections[position] if compat else section)
  assert measured["pericardial_effusion"]["section"] == ("Aortic Valve" if compat else
                                                         "Pericardium")


def test_binary_phenotypes_use_the_release_thresholds(release, both):
  root, imported, _, _ = release
  with open(root / "assets" / "roc_thresholds.csv", newline="") as f:
    thresholds = {r["feature"]: float(r["threshold"]) for r in csv.DictReader(f)}
  imported_release = release_lib.ImportedRelease.load(str(imported))
  pooled = release_lib.section_embeddings(both["emb"], both["ref_views"], imported_release.table)
  measured = release_lib.interpret(pooled, imported_release)["measurements"]
  binary = {n: m for n, m in measured.items() if m["mode"] == "binary"}
  assert len(binary) == 19
  for name, m in binary.items():
    assert m["threshold"] == thresholds[name]
    assert m["positive"] == (m["probability"] >= thresholds[name])


def test_interpret_prints_echoprimes_report_and_metrics(release, tmp_path, capsys):
  _, imported, reference, study = release
  out = tmp_path / "report"
  assert interpret_cli.main([str(study), "--release", str(imported), "--out", str(out)]) == 0
  printed = capsys.readouterr().out
  assert "REPORT" in printed and "MEASUREMENTS" in printed
  assert "Left Ventricle:" in printed and "ejection_fraction" in printed
  result = json.loads((out / "interpretation.json").read_text())
  assert result["pairing"] == "by section name" and len(result["videos"]) == 3
  assert result["report_text"].count("[SEP]") == len(result["report"]) == 15
  html = (out / "report.html").read_text()
  for text in (str(study), "DOE_JOHN", "clip_"):  # "_": never inside the page's base64 images
    assert text not in printed and text not in html and text not in json.dumps(result)


def test_import_needs_trust_pickles_and_refuses_a_planted_payload(release, tmp_path, capsys):
  root, _, _, _ = release
  code = release_cli.main(["import", "--release", str(root), "--out", str(tmp_path / "a")])
  err = capsys.readouterr().err.strip().splitlines()
  assert code == 2 and len(err) == 1 and "--trust-pickles" in err[0]
  # a tampered copy: the labels pickle runs code when unpickled naively
  tampered = tmp_path / "tampered"
  shutil.copytree(root, tampered, ignore=shutil.ignore_patterns("*.pt"))
  for pt in root.rglob("*.pt"):
    os.symlink(pt, tampered / pt.relative_to(root))
  marker = tmp_path / "payload-ran"
  with open(tampered / "candidates_data" / "candidate_labels.pkl", "wb") as f:
    pickle.dump({"ejection_fraction": {"S100000": Payload(marker)}}, f)
  code = release_cli.main(["import", "--release", str(tampered), "--out", str(tmp_path / "b"),
                           "--trust-pickles"])
  err = capsys.readouterr().err.strip().splitlines()
  assert code == 2 and len(err) == 1 and "refused to unpickle" in err[0]
  assert not marker.exists() and not (tmp_path / "b").exists()


def test_an_incomplete_release_lists_what_is_missing(tmp_path, capsys):
  (tmp_path / "r" / "weights").mkdir(parents=True)
  (tmp_path / "r" / "weights" / "echo_prime_encoder.pt").write_bytes(b"")
  code = release_cli.main(["import", "--release", str(tmp_path / "r"), "--out",
                           str(tmp_path / "o"), "--trust-pickles"])
  err = capsys.readouterr().err.strip().splitlines()
  assert code == 2 and len(err) == 1
  assert "candidate_reports.pkl" in err[0] and "MIL_weights.csv" in err[0]
  assert "echo_prime_encoder.pt" not in err[0]


def test_echonet_recipe_with_the_release_towers(release, tmp_path, capsys):
  """EchoNet-style videos -> shards (its split, EF labels) -> export with the imported release's
  towers -> an EF probe fitted on TRAIN and scored on TEST: the README recipe, in miniature."""
  from data_prep import convert, deid
  from echoprime_jax import export as export_cli
  from echoprime_jax import probe as probe_cli
  from echoprime_jax.data import tokenizer
  from tests.data_prep.test_video_input import echonet_dataset
  _, imported, _, _ = release
  echonet_dataset(tmp_path / "EchoNet", n=9, splits=("TRAIN",) * 5 + ("TEST",) * 3)
  shards = tmp_path / "shards"
  convert.run(str(tmp_path / "EchoNet"), str(shards), deid.INSECURE_TEST_KEY,
              convert.Options(size=224, layout="echonet"), progress=False)
  tokenizer.train_wordpiece(["the left ventricle is normal", "mild mitral regurgitation"],
                            str(tmp_path / "tok"), vocab_size=200)
  for split in ("train", "test"):
    assert export_cli.main(["--towers", str(imported), "--tokenizer", str(tmp_path / "tok"),
                            "--data", str(shards), "--split", split, "--out",
                            str(tmp_path / split), "--batch", "2"]) == 0
  emb = np.load(tmp_path / "test" / "video_embeddings.npy")
  assert emb.shape == (3, 512) and np.allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-5)
  assert probe_cli.main(["--export", str(tmp_path / "test"), "--train_export",
                         str(tmp_path / "train"), "--labels", str(shards / "studies.parquet"),
                         "--data", str(shards), "--target", "EF", "--bootstraps", "20",
                         "--k", "2", "--out", str(tmp_path / "probe")]) == 0
  result = json.loads((tmp_path / "probe" / "EF_study_mean.json").read_text())
  assert result["n"] == 3 and result["n_train"] == 5 and result["folds"] == "held-out split"
  assert result["baseline"]["mae"] == pytest.approx(np.mean(np.abs(
      np.array([55.0, 56.0, 57.0]) - np.mean([50.0, 51.0, 52.0, 53.0, 54.0]))))
  # shards at another frame size than the towers': one line, exit 2, nothing exported
  convert.run(str(tmp_path / "EchoNet"), str(tmp_path / "shards112"), deid.INSECURE_TEST_KEY,
              convert.Options(size=112, layout="echonet"), progress=False)
  capsys.readouterr()
  assert export_cli.main(["--towers", str(imported), "--tokenizer", str(tmp_path / "tok"),
                          "--data", str(tmp_path / "shards112"), "--split", "test", "--out",
                          str(tmp_path / "test112"), "--batch", "2"]) == 2
  err = capsys.readouterr().err.strip().splitlines()  # the progress bar's lines, then ours
  assert err[-1].startswith("error: ") and "Traceback" not in "".join(err)
  assert "holds 112x112 frames, the model takes 224x224" in err[-1] and "--size 224" in err[-1]
  assert not (tmp_path / "test112" / "video_embeddings.npy").exists()
