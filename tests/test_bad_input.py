"""Bad input through the real commands, table-driven: each case must end in exit code 2 with one
clear line on stderr (what, which file, what to do) and no traceback, and leave the files it was
given as they were (nothing deleted, nothing half-written).

Most commands run in this process (their `main(argv)`; the fixture's folders are small real
ones: run folders, a database, an export, a converted tower, the test archive's shards); the
two absl commands (`train`, `describe`) run as subprocesses.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import pickle
import subprocess
import sys
from typing import Callable

import numpy as np
import pytest

from tests.pickle_payload import Payload

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def world(tmp_path_factory, converted, archive):
  """Small real inputs: run folders of each stage (config only), a database, an export, a
  converted tower, labels, and the test archive's shards."""
  import pyarrow as pa
  import pyarrow.parquet as pq
  from flax import nnx

  from configs import mil as mil_config
  from configs import pretrain as pretrain_config
  from configs import views as views_config
  from echoprime_jax.models import convnext
  from echoprime_jax.retrieval import database
  from echoprime_jax.run.folder import RunFolder
  from echoprime_jax.weights import tower_folder
  root = tmp_path_factory.mktemp("bad_input")
  shards = str(converted[0])
  w = {"root": root, "shards": shards, "dicom": str(archive / "dicom"),
       "reports": str(archive / "reports.csv")}
  for stage, module in (("pretrain", pretrain_config), ("views", views_config),
                        ("mil", mil_config)):
    cfg = module.get_config("tiny")
    cfg.data.dir = shards
    RunFolder(str(root / stage)).write_config(cfg.to_dict())
    w[stage] = str(root / stage)
  rng = np.random.default_rng(0)
  reports = [{"Left Ventricle": f"Ejection fraction is {e}%.",
              "Pericardium": "No pericardial effusion."} for e in (60, 30, 45, 55)]
  db = database.build(["a", "b", "c", "d"], rng.standard_normal((4, 8)), reports,
                      index_kind="exact")
  from echoprime_jax.retrieval import labels
  db.save(str(root / "db"), labels.DEFAULT_RULES)
  w["db"] = str(root / "db")
  export = root / "export"
  export.mkdir()
  ids = [f"s{i:03d}" for i in range(40)]
  pq.write_table(pa.table({"study_id": ids, "row": np.arange(40)}), export / "studies.parquet")
  np.save(export / "study_mean.npy", rng.standard_normal((40, 8)).astype(np.float32))
  w["export"] = str(export)
  with open(root / "labels.csv", "w") as f:
    f.write("study_id,lvef\n" + "".join(f"{s},{50 + i % 7}\n" for i, s in enumerate(ids)))
  w["labels"] = str(root / "labels.csv")
  with open(root / "other_labels.csv", "w") as f:
    f.write("study_id,lvef\n" + "".join(f"x{i},{50 + i}\n" for i in range(40)))
  w["other_labels"] = str(root / "other_labels.csv")
  from echoprime_jax.run import output_folder
  with output_folder.atomic(str(root / "tower"), "tower") as tmp:  # as convert_weights writes
    tower_folder.save_tower(tmp, convnext.ConvNeXt(convnext.convnext("test"), rngs=nnx.Rngs(0)),
                            source="test")
  w["tower"] = str(root / "tower")
  (root / "mine").mkdir()
  (root / "mine" / "notes.txt").write_text("the user's")
  w["mine"] = str(root / "mine")
  (root / "afile.txt").write_text("x")
  w["file"] = str(root / "afile.txt")
  (root / "empty").mkdir()
  w["empty"] = str(root / "empty")
  w["missing"] = str(root / "does_not_exist")
  (root / "bad.json").write_text("{not json")
  w["bad_json"] = str(root / "bad.json")
  (root / "bad.csv").write_text("Section,A2C\nLeft Ventricle,abc\n")
  w["bad_csv"] = str(root / "bad.csv")
  (root / "empty.pt").write_bytes(b"")
  w["empty_pt"] = str(root / "empty.pt")
  (root / "trunc.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{")
  w["trunc_st"] = str(root / "trunc.safetensors")
  # a study folder with only a text file, and a database with planted pickles
  import shutil
  for broken in ("trunc_parquet", "trunc_shard", "no_shard"):
    shutil.copytree(shards, root / broken)
  p = root / "trunc_parquet" / "studies.parquet"
  p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
  shard = sorted((root / "trunc_shard").glob("*-train.array_record-*"))[0]
  shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 3])
  os.remove(sorted((root / "no_shard").glob("*-train.array_record-*"))[0])
  for broken in ("trunc_parquet", "trunc_shard", "no_shard"):
    w[broken] = str(root / broken)
  (root / "study").mkdir()
  (root / "study" / "IM_0001").write_bytes(b"not a dicom at all")
  w["study"] = str(root / "study")
  # an EchoPrime release with every file present (empty: no command gets to read them) and a
  # folder marked as an imported release
  from echoprime_jax.release import layout
  for rel in layout.RELEASE_FILES.values():
    (root / "release" / rel).parent.mkdir(parents=True, exist_ok=True)
    (root / "release" / rel).write_bytes(b"")
  w["release"] = str(root / "release")
  (root / "partial_release" / "weights").mkdir(parents=True)
  (root / "partial_release" / "weights" / "view_classifier.pt").write_bytes(b"")
  w["partial_release"] = str(root / "partial_release")
  (root / "imported").mkdir()
  output_folder.mark(str(root / "imported"), layout.OUTPUT_KIND)
  w["imported"] = str(root / "imported")
  return w


@dataclasses.dataclass
class Case:
  name: str
  command: str  # module of the command: "export", "index", ... ("train" / "describe": absl)
  argv: Callable[[dict], list[str]]
  says: str  # a piece of the one error line
  untouched: tuple[str, ...] = ()  # world keys whose folders must come out unchanged
  absent: tuple[str, ...] = ()  # paths (relative to the world's root) that must not appear


def _ok_export(w, **kw):
  args = ["--towers", w["pretrain"], "--data", w["shards"], "--out", str(w["root"] / "out_e")]
  for k, v in kw.items():
    args += [f"--{k}", v]
  return args


CASES = [
    # -- convert_weights
    Case("weights: missing input", "convert_weights",
         lambda w: ["mvit", "--input", w["missing"] + ".pt", "--output", str(w["root"] / "o1")],
         "does_not_exist.pt", absent=("o1",)),
    Case("weights: empty .pt", "convert_weights",
         lambda w: ["convnext", "--input", w["empty_pt"], "--output", str(w["root"] / "o2")],
         "empty.pt", absent=("o2",)),
    Case("weights: truncated safetensors", "convert_weights",
         lambda w: ["convnext", "--input", w["trunc_st"], "--output", str(w["root"] / "o3")],
         "trunc.safetensors", absent=("o3",)),
    Case("weights: a folder as --input", "convert_weights",
         lambda w: ["mvit", "--input", w["empty"], "--output", str(w["root"] / "o4")],
         "empty", absent=("o4",)),
    Case("weights: unknown file type", "convert_weights",
         lambda w: ["mvit", "--input", w["file"], "--output", str(w["root"] / "o5")],
         "afile.txt", absent=("o5",)),
    Case("weights: hf-bert from a missing folder", "convert_weights",
         lambda w: ["hf-bert", "--input", w["missing"], "--output", str(w["root"] / "o6")],
         "does_not_exist", absent=("o6",)),
    Case("weights: hf-bert from a file", "convert_weights",
         lambda w: ["hf-bert", "--input", w["file"], "--output", str(w["root"] / "o7")],
         "afile.txt", absent=("o7",)),
    Case("weights: output is a file", "convert_weights",
         lambda w: ["mvit", "--input", w["empty_pt"], "--output", w["file"]],
         "not a folder"),
    Case("weights: --overwrite on the user's folder", "convert_weights",
         lambda w: ["mvit", "--input", w["empty_pt"], "--output", w["mine"], "--overwrite"],
         "not written by echoprime-jax", untouched=("mine",)),
    Case("weights: existing tower without --overwrite", "convert_weights",
         lambda w: ["convnext", "--input", w["empty_pt"], "--output", w["tower"]],
         "--overwrite", untouched=("tower",)),
    Case("weights: typo'd input with --overwrite keeps the tower", "convert_weights",
         lambda w: ["convnext", "--input", w["missing"] + ".pt", "--output", w["tower"],
                    "--overwrite"], "does_not_exist.pt", untouched=("tower",)),
    Case("weights: --out-dim 0", "convert_weights",
         lambda w: ["hf-bert", "--input", w["empty"], "--output", str(w["root"] / "o8"),
                    "--as-text-encoder", "--out-dim", "0"], "at least 1", absent=("o8",)),
    # -- export
    Case("export: missing towers run", "export",
         lambda w: _ok_export(w) [:1] + [w["missing"]] + _ok_export(w)[2:], "no config.json",
         absent=("out_e",)),
    Case("export: towers from a views run", "export",
         lambda w: ["--towers", w["views"]] + _ok_export(w)[2:], "expected 'pretrain'",
         absent=("out_e",)),
    Case("export: towers run without checkpoints", "export", lambda w: _ok_export(w),
         "no checkpoint", absent=("out_e/video_embeddings.npy",)),
    Case("export: --batch 0", "export", lambda w: _ok_export(w, batch="0"), "at least 1",
         absent=("out_e",)),
    Case("export: --batch abc", "export", lambda w: _ok_export(w, batch="abc"),
         "not a whole number", absent=("out_e",)),
    Case("export: --section_len 0", "export", lambda w: _ok_export(w, section_len="0"),
         "at least 4", absent=("out_e",)),
    Case("export: --out is the user's folder", "export",
         lambda w: _ok_export(w)[:4] + ["--out", w["mine"]], "not written by echoprime-jax",
         untouched=("mine",)),
    Case("export: --out is a file", "export", lambda w: _ok_export(w)[:4] + ["--out", w["file"]],
         "not a folder"),
    Case("export: --data not a shard folder", "export",
         lambda w: ["--towers", w["pretrain"], "--data", w["empty"], "--out",
                    str(w["root"] / "out_e")], "no studies.parquet", absent=("out_e",)),
    Case("export: --data with a truncated studies.parquet", "export",
         lambda w: ["--towers", w["pretrain"], "--data", w["trunc_parquet"], "--out",
                    str(w["root"] / "out_e"), "--split", "train"], "unreadable",
         absent=("out_e",)),
    Case("export: --data with a truncated shard", "export",
         lambda w: ["--towers", w["pretrain"], "--data", w["trunc_shard"], "--out",
                    str(w["root"] / "out_e"), "--split", "train"], "not a readable shard",
         absent=("out_e",)),
    Case("export: --data missing a shard", "export",
         lambda w: ["--towers", w["pretrain"], "--data", w["no_shard"], "--out",
                    str(w["root"] / "out_e"), "--split", "train"], "which is not there",
         absent=("out_e",)),
    Case("export: a split the data does not have", "export",
         lambda w: ["--towers", w["pretrain"], "--data", w["shards"], "--out",
                    str(w["root"] / "out_e"), "--split", "holdout"], "no shards for split",
         absent=("out_e",)),
    Case("export: --mil and --table together", "export",
         lambda w: _ok_export(w, mil=w["mil"], table=w["bad_csv"]), "not allowed with",
         absent=("out_e",)),
    # -- index
    Case("index build: missing MIL run", "index",
         lambda w: ["build", "--mil_run", w["missing"], "--out", str(w["root"] / "db1")],
         "no config.json", absent=("db1",)),
    Case("index build: a pretraining run as the MIL run", "index",
         lambda w: ["build", "--mil_run", w["pretrain"], "--out", str(w["root"] / "db2")],
         "expected 'mil'", absent=("db2",)),
    Case("index build: MIL run without embeddings", "index",
         lambda w: ["build", "--mil_run", w["mil"], "--out", str(w["root"] / "db3")],
         "has the MIL stage run", absent=("db3",)),
    Case("index build: over the user's folder", "index",
         lambda w: ["build", "--mil_run", w["mil"], "--out", w["mine"], "--overwrite"],
         "not written by echoprime-jax", untouched=("mine",)),
    Case("index build: over a database without --overwrite", "index",
         lambda w: ["build", "--mil_run", w["mil"], "--out", w["db"]], "--overwrite",
         untouched=("db",)),
    Case("index build: --leaves -1", "index",
         lambda w: ["build", "--mil_run", w["mil"], "--out", str(w["root"] / "db4"),
                    "--leaves", "-1"], "at least 0", absent=("db4",)),
    Case("index build: unknown --index", "index",
         lambda w: ["build", "--mil_run", w["mil"], "--out", str(w["root"] / "db5"),
                    "--index", "faiss"], "invalid choice", absent=("db5",)),
    Case("index evaluate: missing database", "index",
         lambda w: ["evaluate", "--db", w["missing"], "--mil_run", w["mil"]],
         "not a candidate database"),
    Case("index evaluate: a folder that is not a database", "index",
         lambda w: ["evaluate", "--db", w["empty"], "--mil_run", w["mil"]],
         "not a candidate database"),
    Case("index evaluate: --k 0", "index",
         lambda w: ["evaluate", "--db", w["db"], "--mil_run", w["mil"], "--k", "0"],
         "at least 1"),
    Case("index evaluate: --consensus 0", "index",
         lambda w: ["evaluate", "--db", w["db"], "--mil_run", w["mil"], "--consensus", "0"],
         "at least 1"),
    Case("index evaluate: MIL run without its export", "index",
         lambda w: ["evaluate", "--db", w["db"], "--mil_run", w["mil"]],
         "has the MIL stage run"),
    Case("index evaluate: a views run as the MIL run", "index",
         lambda w: ["evaluate", "--db", w["db"], "--mil_run", w["views"]], "expected 'mil'"),
    # -- interpret
    Case("interpret: missing study folder", "interpret",
         lambda w: [w["missing"], "--model", w["mil"], "--index", w["db"], "--out",
                    str(w["root"] / "i1")], "", absent=("i1",)),
    Case("interpret: missing MIL run", "interpret",
         lambda w: [w["study"], "--model", w["missing"], "--index", w["db"], "--out",
                    str(w["root"] / "i2")], "no config.json", absent=("i2",)),
    Case("interpret: a pretraining run as --model", "interpret",
         lambda w: [w["study"], "--model", w["pretrain"], "--index", w["db"], "--out",
                    str(w["root"] / "i3")], "expected 'mil'", absent=("i3",)),
    Case("interpret: MIL run without checkpoints", "interpret",
         lambda w: [w["study"], "--model", w["mil"], "--index", w["db"], "--out",
                    str(w["root"] / "i4")], "no checkpoint", absent=("i4",)),
    Case("interpret: --k 0", "interpret",
         lambda w: [w["study"], "--model", w["mil"], "--index", w["db"], "--out",
                    str(w["root"] / "i5"), "--k", "0"], "at least 1", absent=("i5",)),
    Case("interpret: --consensus 0", "interpret",
         lambda w: [w["study"], "--model", w["mil"], "--index", w["db"], "--out",
                    str(w["root"] / "i6"), "--consensus", "0"], "at least 1", absent=("i6",)),
    Case("interpret: --out is the user's folder", "interpret",
         lambda w: [w["study"], "--model", w["mil"], "--index", w["db"], "--out", w["mine"]],
         "not written by echoprime-jax", untouched=("mine",)),
    Case("interpret: unknown --match", "interpret",
         lambda w: [w["study"], "--model", w["mil"], "--index", w["db"], "--out",
                    str(w["root"] / "i7"), "--match", "nearest"], "invalid choice",
         absent=("i7",)),
    Case("interpret: --thresholds not JSON", "interpret",
         lambda w: [w["study"], "--model", w["mil"], "--index", w["db"], "--out",
                    str(w["root"] / "i8"), "--thresholds", w["bad_json"]],
         "must be a JSON object", absent=("i8",)),
    Case("interpret: missing --thresholds file", "interpret",
         lambda w: [w["study"], "--model", w["mil"], "--index", w["db"], "--out",
                    str(w["root"] / "i9"), "--thresholds", w["missing"]], "does_not_exist",
         absent=("i9",)),
    # -- probe
    Case("probe: missing export", "probe",
         lambda w: ["--export", w["missing"], "--labels", w["labels"], "--target", "lvef"],
         "does_not_exist"),
    Case("probe: a folder that is not an export", "probe",
         lambda w: ["--export", w["empty"], "--labels", w["labels"], "--target", "lvef"],
         "not an export"),
    Case("probe: missing labels file", "probe",
         lambda w: ["--export", w["export"], "--labels", w["missing"], "--target", "lvef"],
         "does_not_exist"),
    Case("probe: labels without the target column", "probe",
         lambda w: ["--export", w["export"], "--labels", w["labels"], "--target", "amyloid"],
         "needs the columns"),
    Case("probe: rules without --data", "probe",
         lambda w: ["--export", w["export"], "--labels", "rules", "--target", "lvef"],
         "pass --data"),
    Case("probe: an unknown rule label", "probe",
         lambda w: ["--export", w["export"], "--labels", "rules", "--target", "amyloid",
                    "--data", w["shards"]], "is not a rule label"),
    Case("probe: a target no study of the export has", "probe",
         lambda w: ["--export", w["export"], "--labels", w["other_labels"], "--target",
                    "lvef"], "no study of the export"),
    Case("probe: --folds 1", "probe",
         lambda w: ["--export", w["export"], "--labels", w["labels"], "--target", "lvef",
                    "--folds", "1"], "at least 2"),
    Case("probe: --k 0", "probe",
         lambda w: ["--export", w["export"], "--labels", w["labels"], "--target", "lvef",
                    "--k", "0"], "at least 1"),
    Case("probe: --bootstraps 0", "probe",
         lambda w: ["--export", w["export"], "--labels", w["labels"], "--target", "lvef",
                    "--bootstraps", "0"], "at least 10"),
    Case("probe: a level the export lacks", "probe",
         lambda w: ["--export", w["export"], "--labels", w["labels"], "--target", "lvef",
                    "--embedding", "study_sections"], "not in the export"),
    Case("probe: zero-shot prompts file missing", "probe",
         lambda w: ["--export", w["export"], "--labels", w["labels"], "--target", "lvef",
                    "--zero_shot", "--prompts", w["missing"]], "does_not_exist"),
    Case("probe: unknown --kind", "probe",
         lambda w: ["--export", w["export"], "--labels", w["labels"], "--target", "lvef",
                    "--kind", "ordinal"], "invalid choice"),
    # -- the demo
    Case("demo: a stage folder of the user's in --workdir", "demo",
         lambda w: ["--workdir", str(w["root"] / "demo_work"), "--until", "shards",
                    "--studies", "2"], "was not made by the demo", untouched=("demo_user",)),
    Case("demo: unknown --until", "demo",
         lambda w: ["--workdir", str(w["root"] / "demo2"), "--until", "everything"],
         "invalid choice", absent=("demo2",)),
    Case("demo: --studies -1", "demo",
         lambda w: ["--workdir", str(w["root"] / "demo3"), "--studies", "-1"], "at least 0",
         absent=("demo3",)),
]

CASES += [
    Case("release import: --release is not a folder", "echoprime_jax.release.__main__",
         lambda w: ["import", "--release", w["file"], "--out", str(w["root"] / "r1"),
                    "--trust-pickles"], "not a folder", absent=("r1",)),
    Case("release import: files missing", "echoprime_jax.release.__main__",
         lambda w: ["import", "--release", w["partial_release"], "--out", str(w["root"] / "r2"),
                    "--trust-pickles"], "lacks weights/echo_prime_encoder.pt",
         absent=("r2",)),
    Case("release import: without --trust-pickles", "echoprime_jax.release.__main__",
         lambda w: ["import", "--release", w["release"], "--out", str(w["root"] / "r3")],
         "pass --trust-pickles", untouched=("release",), absent=("r3",)),
    Case("release import: --out is the user's folder", "echoprime_jax.release.__main__",
         lambda w: ["import", "--release", w["release"], "--out", w["mine"], "--overwrite",
                    "--trust-pickles"], "not written by echoprime-jax", untouched=("mine",)),
    Case("release import: empty weight files", "echoprime_jax.release.__main__",
         lambda w: ["import", "--release", w["release"], "--out", str(w["root"] / "r4"),
                    "--trust-pickles"], "MIL_weights.csv", untouched=("release",),
         absent=("r4",)),
    Case("interpret: --release is not an imported release", "interpret",
         lambda w: [w["study"], "--release", w["mine"], "--out", str(w["root"] / "i1")],
         "not an imported EchoPrime release", untouched=("mine",), absent=("i1",)),
    Case("interpret: --release with --model", "interpret",
         lambda w: [w["study"], "--release", w["imported"], "--model", w["mil"], "--out",
                    str(w["root"] / "i2")], "--release replaces", absent=("i2",)),
    Case("interpret: --echoprime-compat without --release", "interpret",
         lambda w: [w["study"], "--model", w["mil"], "--index", w["db"], "--out",
                    str(w["root"] / "i3"), "--echoprime-compat"], "--release only",
         absent=("i3",)),
    Case("export: an imported release without --tokenizer", "export",
         lambda w: ["--towers", w["imported"], "--data", w["shards"], "--out",
                    str(w["root"] / "e_rel")], "pass --tokenizer", absent=("e_rel",)),
]


def _convert(w, out="c_out", *extra):
  return ["--input", w["dicom"], "--output", str(w["root"] / out), "--insecure-test-key",
          "--workers", "1", *extra]


CASES += [
    Case("convert: --layout echonet without FileList.csv", "data_prep.convert",
         lambda w: _convert(w, "c_echonet", "--layout", "echonet"), "needs FileList.csv",
         absent=("c_echonet",)),
    Case("convert: missing --input", "data_prep.convert",
         lambda w: ["--input", w["missing"], "--output", str(w["root"] / "c1"),
                    "--insecure-test-key"], "--input is not a folder", absent=("c1",)),
    Case("convert: --input is a file", "data_prep.convert",
         lambda w: ["--input", w["file"], "--output", str(w["root"] / "c2"),
                    "--insecure-test-key"], "--input is not a folder", absent=("c2",)),
    Case("convert: an empty --input", "data_prep.convert",
         lambda w: ["--input", w["empty"], "--output", str(w["root"] / "c3"),
                    "--insecure-test-key"], "holds no files", absent=("c3",)),
    Case("convert: missing --reports", "data_prep.convert",
         lambda w: _convert(w, "c4", "--reports", w["missing"]), "--reports: no such file",
         absent=("c4",)),
    Case("convert: missing --labels", "data_prep.convert",
         lambda w: _convert(w, "c5", "--labels", w["missing"]), "--labels: no such file",
         absent=("c5",)),
    Case("convert: --size 0", "data_prep.convert", lambda w: _convert(w, "c6", "--size", "0"),
         "at least 16", absent=("c6",)),
    Case("convert: --workers 0", "data_prep.convert",
         lambda w: _convert(w, "c7")[:-2] + ["--workers", "0"], "at least 1", absent=("c7",)),
    Case("convert: --jpeg-quality 101", "data_prep.convert",
         lambda w: _convert(w, "c8", "--jpeg-quality", "101"), "1-100", absent=("c8",)),
    Case("convert: --videos-per-shard 0", "data_prep.convert",
         lambda w: _convert(w, "c9", "--videos-per-shard", "0"), "at least 1",
         absent=("c9",)),
    Case("convert: bad --split-fractions", "data_prep.convert",
         lambda w: _convert(w, "c10", "--split-fractions", "0.8,0.2"), "three non-negative",
         absent=("c10",)),
    Case("convert: --output is a file", "data_prep.convert",
         lambda w: ["--input", w["dicom"], "--output", w["file"], "--insecure-test-key"],
         "--output is a file"),
    Case("convert: no de-identification key", "data_prep.convert",
         lambda w: ["--input", w["dicom"], "--output", str(w["root"] / "c11")], "key",
         absent=("c11",)),
    Case("convert: the mapping file inside the shards", "data_prep.convert",
         lambda w: _convert(w, "c12", "--mapping-file", str(w["root"] / "c12" / "map.csv")),
         "--mapping-file lies inside --output", absent=("c12",)),
]

ABSL_CASES = [
    Case("train: a missing config file", "train",
         lambda w: ["--config", "configs/nope.py:tiny", "--workdir", str(w["root"] / "t1")],
         "nope.py", absent=("t1",)),
    Case("train: an unknown config field", "train",
         lambda w: ["--config", "configs/pretrain.py:tiny", "--workdir", str(w["root"] / "t2"),
                    "--config.nope=1"], "nope", absent=("t2",)),
    Case("train: a wrong-typed override", "train",
         lambda w: ["--config", "configs/pretrain.py:tiny", "--workdir", str(w["root"] / "t3"),
                    "--config.batch_size=abc"], "batch_size", absent=("t3",)),
    Case("train: an old field disagreeing with its home", "train",
         lambda w: ["--config", "configs/pretrain.py:tiny", "--workdir", str(w["root"] / "t4"),
                    "--config.data.clip_length=16"], "towers.video.num_frames",
         absent=("t4",)),
    Case("train: a missing data folder", "train",
         lambda w: ["--config", "configs/pretrain.py:tiny", "--workdir", str(w["root"] / "t5"),
                    f"--config.data.dir={w['missing']}"], "does_not_exist"),
    Case("describe: a missing tower folder", "describe",
         lambda w: ["--tower", w["missing"]], "not a tower checkpoint"),
    Case("describe: a folder that is not a tower", "describe",
         lambda w: ["--tower", w["empty"]], "not a tower checkpoint"),
]


def _snapshot(path: str) -> dict[str, bytes]:
  out = {}
  for root, _, files in os.walk(path):
    for f in files:
      p = os.path.join(root, f)
      with open(p, "rb") as fh:
        out[os.path.relpath(p, path)] = fh.read()
  return out


def _in_process(command: str, argv: list[str]) -> tuple[int, str]:
  """(exit code, stderr) of `python -m echoprime_jax.<command>` run in this process; an
  exception escaping main is a traceback: the test fails on it."""
  import importlib
  module = importlib.import_module(
      command if "." in command else
      f"echoprime_jax.{command}" if command != "demo" else "echoprime_jax.demo.__main__")
  err = io.StringIO()
  with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
    try:
      code = module.main(argv)
    except SystemExit as e:  # argparse
      code = e.code
  return int(code or 0), err.getvalue()


def _check(case: Case, world: dict, code: int, stderr: str) -> None:
  lines = [line for line in stderr.splitlines() if line.startswith("error:")
           or ": error:" in line]
  assert code == 2, (case.name, code, stderr[-2000:])
  assert "Traceback" not in stderr, (case.name, stderr[-2000:])
  assert len(lines) == 1, (case.name, stderr[-2000:])
  assert case.says in lines[0], (case.name, lines[0])


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_is_one_clear_line(case, world):
  if case.name.startswith("demo: a stage folder"):
    (world["root"] / "demo_work" / "shards").mkdir(parents=True, exist_ok=True)
    (world["root"] / "demo_work" / "shards" / "mine.txt").write_text("the user's")
    world["demo_user"] = str(world["root"] / "demo_work" / "shards")
  before = {k: _snapshot(world[k]) for k in case.untouched}
  code, stderr = _in_process(case.command, case.argv(world))
  _check(case, world, code, stderr)
  for k in case.untouched:
    assert _snapshot(world[k]) == before[k], (case.name, k)
  for rel in case.absent:
    assert not (world["root"] / rel).exists(), (case.name, rel)


@pytest.mark.parametrize("case", ABSL_CASES, ids=[c.name for c in ABSL_CASES])
def test_bad_input_to_the_absl_commands(case, world):
  module = "echoprime_jax.train" if case.command == "train" else "echoprime_jax.describe"
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  run = subprocess.run([sys.executable, "-m", module, *case.argv(world)], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=300)
  _check(case, world, run.returncode, run.stderr)
  for rel in case.absent:
    assert not (world["root"] / rel).exists(), (case.name, rel)


def test_planted_pickles_in_every_folder_a_command_reads_never_run(world, tmp_path):
  """A payload that writes a marker when unpickled, planted (under the names loaders look for
  and as stray .pkl files) in the database, export, tower, run and shard folders the commands
  read: no command runs it."""
  import shutil
  marker = tmp_path / "RAN"
  payload = pickle.dumps(Payload(marker))
  copies = {}
  for key in ("db", "export", "tower", "mil", "pretrain", "views"):
    copies[key] = tmp_path / key
    shutil.copytree(world[key], copies[key])
    for root, dirs, _ in os.walk(copies[key]):
      for name in ("payload.pkl", "scann_docids.pkl", "state.pkl"):
        with open(os.path.join(root, name), "wb") as f:
          f.write(payload)
  os.makedirs(copies["db"] / "index" / "scann", exist_ok=True)
  (copies["db"] / "index" / "scann" / "scann_docids.pkl").write_bytes(payload)
  for command, argv in (
      ("index", ["evaluate", "--db", str(copies["db"]), "--mil_run", str(copies["mil"])]),
      ("interpret", [world["study"], "--model", str(copies["mil"]), "--index",
                     str(copies["db"]), "--out", str(tmp_path / "o")]),
      ("probe", ["--export", str(copies["export"]), "--labels", world["labels"], "--target",
                 "lvef", "--bootstraps", "20", "--out", str(tmp_path / "p")]),
      ("export", ["--towers", str(copies["pretrain"]), "--data", world["shards"], "--out",
                  str(tmp_path / "e"), "--views", str(copies["views"])])):
    _in_process(command, argv)
    assert not marker.exists(), command
  from echoprime_jax.inference.load import load_run
  load_run(str(copies["tower"]))  # a tower folder with planted pickles still loads, safely
  assert not marker.exists()
  from echoprime_jax.retrieval.database import CandidateDatabase
  with pytest.raises(ValueError, match="unexpected files"):
    CandidateDatabase.load(str(copies["db"]))
  assert not marker.exists()
  pickle.loads(payload).close()  # the payload works: the test could fail
  assert marker.exists()
