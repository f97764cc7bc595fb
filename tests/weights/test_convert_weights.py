"""The convert_weights CLI end to end: files in every accepted format -> Orbax towers that
reproduce the PyTorch outputs; clear errors for files that do not fit or are not safe."""

import json
import os

import numpy as np
import pytest
import torch

from echoprime_jax import convert_weights
from echoprime_jax.weights import mapping, mvit_weights, state_dict_io, tower_folder
from tests import torch_reference as tr
from tests.jit_helpers import jit_apply
from tests.pickle_payload import Payload


def _run(*argv) -> int:
  return convert_weights.main([str(a) for a in argv])


def test_mvit_file_to_tower_keeps_every_tensor(tmp_path):
  """EchoPrime's video encoder layout (mvit_v2_s, head 768 -> 512) saved with torch.save."""
  from echoprime_jax.models import mvit
  torch_model = tr.torch_mvit(mvit.mvit_v2_s())
  path = tmp_path / "echo_prime_encoder.pt"
  torch.save({"state_dict": {"module." + k: v for k, v in torch_model.state_dict().items()}},
             path)  # wrapped and DDP-prefixed, as training scripts often save
  assert _run("mvit", "--input", path, "--output", tmp_path / "video") == 0
  meta = json.loads((tmp_path / "video" / "tower.json").read_text())
  assert meta["kind"] == "mvit" and meta["config"]["num_outputs"] == 512
  tower = tower_folder.load_tower(tmp_path / "video")
  expected = mapping.torch_to_flax(mapping.abstract_params(tower),
                                   tr.state_dict_numpy(torch_model), mvit_weights.MVIT_KEYS)
  got = mapping.flat_params(tower)
  assert set(got) == set(expected) and len(got) == 397
  for p, v in expected.items():
    np.testing.assert_array_equal(np.asarray(got[p]), v, err_msg=str(p))


def test_convnext_safetensors_to_tower_matches_torch(tmp_path):
  from safetensors.torch import save_file
  torch_model = tr.torch_convnext((1, 2), (16, 32))
  save_file(dict(torch_model.state_dict()), str(tmp_path / "views.safetensors"))
  assert _run("convnext", "--input", tmp_path / "views.safetensors",
              "--output", tmp_path / "views") == 0
  tower = tower_folder.load_tower(tmp_path / "views")  # eval mode: the parity below needs it
  images = np.random.default_rng(0).standard_normal((2, 64, 64, 3)).astype(np.float32)
  with torch.no_grad():
    ref = torch_model(torch.from_numpy(images.transpose(0, 3, 1, 2).copy())).numpy()
  np.testing.assert_allclose(np.asarray(jit_apply(tower, images)), ref, atol=1e-4, rtol=0)
  # the same folder through the inference API (eval mode, replicated)
  from echoprime_jax.inference.load import load_run
  run = load_run(str(tmp_path / "views"))
  assert run.stage == "tower" and run.config.kind == "convnext" and run.step == 0
  np.testing.assert_allclose(np.asarray(jit_apply(run.model, images)), ref, atol=1e-4, rtol=0)


def test_echoprime_text_file_to_tower_matches_reference(tmp_path):
  torch.manual_seed(0)
  reference = tr.EchoPrimeTextReference(tr.hf_bert_config("tiny"), out_dim=32).eval()
  torch.save(reference.state_dict(), tmp_path / "text.pt")
  hf_cfg = tr.hf_bert_config("tiny")
  (tmp_path / "config.json").write_text(json.dumps(hf_cfg.to_dict()))
  assert _run("echoprime-text", "--input", tmp_path / "text.pt", "--output", tmp_path / "text",
              "--bert-config", tmp_path / "config.json") == 0
  tower = tower_folder.load_tower(tmp_path / "text")
  ids, mask, _ = tr.token_batch(1000, 40, pad_from=(40, 9))
  with torch.no_grad():
    ref = reference(torch.from_numpy(ids), torch.from_numpy(mask)).numpy()
  np.testing.assert_allclose(np.asarray(jit_apply(tower, ids, mask)), ref, atol=1e-4, rtol=0)


@pytest.mark.parametrize("safe", [True, False])
def test_hf_directory_to_text_encoder(tmp_path, safe):
  import transformers
  torch.manual_seed(0)
  hf_cfg = tr.hf_bert_config("tiny")
  mlm = transformers.BertForMaskedLM(hf_cfg).eval()  # BiomedBERT's checkpoints are MLM models
  hf_dir = tmp_path / "hf"
  mlm.save_pretrained(hf_dir, safe_serialization=safe)
  (hf_dir / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]))
  assert _run("hf-bert", "--input", hf_dir, "--output", tmp_path / "text",
              "--as-text-encoder", "--out-dim", 24) == 0
  assert (tmp_path / "text" / "tokenizer" / "vocab.txt").is_file()
  tower = tower_folder.load_tower(tmp_path / "text")
  assert tower.config.out_dim == 24
  ids, mask, _ = tr.token_batch(1000, 32, pad_from=(32, 10))
  with torch.no_grad():
    ref = mlm.bert(input_ids=torch.from_numpy(ids),
                   attention_mask=torch.from_numpy(mask)).last_hidden_state.numpy()
  hidden = jit_apply(tower, ids, mask, fn=lambda m, i, a: m.bert(i, a))
  np.testing.assert_allclose(np.asarray(hidden), ref, atol=1e-4, rtol=0)


def test_mismatched_file_lists_missing_unexpected_and_misshaped_keys(tmp_path, capsys):
  torch_model = tr.torch_convnext((1, 2), (16, 32))
  sd = dict(torch_model.state_dict())
  del sd["features.1.0.block.3.bias"]  # missing
  sd["features.9.extra.weight"] = torch.zeros(3)  # unexpected
  sd["classifier.2.weight"] = torch.zeros(11, 31)  # wrong in-features
  torch.save(sd, tmp_path / "bad.pt")
  assert _run("convnext", "--input", tmp_path / "bad.pt", "--output", tmp_path / "out") == 2
  err = capsys.readouterr().err
  assert "bad.pt" in err
  assert "1 missing keys" in err and "features.1.0.block.3.bias" in err
  assert "1 unexpected keys" in err and "features.9.extra.weight" in err
  assert "1 mis-shaped keys" in err and "classifier.2.weight: file (11, 31)" in err
  assert not (tmp_path / "out" / "tower.json").exists()


def test_unsafe_pickle_is_refused_and_not_executed(tmp_path, capsys):
  marker = tmp_path / "pwned"
  torch.save({"weight": torch.zeros(2), "payload": Payload(str(marker))}, tmp_path / "evil.pt")
  assert not marker.exists()
  assert _run("convnext", "--input", tmp_path / "evil.pt", "--output", tmp_path / "out") == 2
  assert "refused to load" in capsys.readouterr().err
  assert not marker.exists()
  with pytest.raises(state_dict_io.UnsafeCheckpointError):
    state_dict_io.load_state_dict(str(tmp_path / "evil.pt"))


def test_existing_output_is_not_overwritten_without_flag(tmp_path, capsys):
  out = tmp_path / "out"
  out.mkdir()
  (out / "keep.txt").write_text("x")
  assert _run("convnext", "--input", tmp_path / "none.pt", "--output", out) == 2
  assert "exists" in capsys.readouterr().err and (out / "keep.txt").exists()
  # --overwrite replaces only a tower folder we wrote: this one is the user's, kept whole
  assert _run("convnext", "--input", tmp_path / "none.pt", "--output", out, "--overwrite") == 2
  assert "not written by echoprime-jax" in capsys.readouterr().err
  assert sorted(os.listdir(out)) == ["keep.txt"]


def test_overwrite_keeps_the_old_tower_until_the_new_one_is_complete(tmp_path, capsys):
  from safetensors.torch import save_file
  save_file(dict(tr.torch_convnext((1, 2), (16, 32)).state_dict()), str(tmp_path / "v.safetensors"))
  out = tmp_path / "views"
  assert _run("convnext", "--input", tmp_path / "v.safetensors", "--output", out) == 0
  before = {f: (out / f).stat().st_mtime_ns for f in ("tower.json",)}
  # a typo'd --input with --overwrite: one line, the good tower untouched
  assert _run("convnext", "--input", tmp_path / "typo.safetensors", "--output", out, "--overwrite") == 2
  err = capsys.readouterr().err
  assert "typo.safetensors" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
  assert {f: (out / f).stat().st_mtime_ns for f in before} == before
  assert tower_folder.load_tower(out).config.num_classes == 11
  # a good --input with --overwrite: replaced, no temporary folder left beside it
  assert _run("convnext", "--input", tmp_path / "v.safetensors", "--output", out, "--overwrite") == 0
  assert sorted(p.name for p in tmp_path.iterdir()) == ["v.safetensors", "views"]


def test_missing_input_file_names_the_file(tmp_path, capsys):
  assert _run("mvit", "--input", tmp_path / "absent.pt", "--output", tmp_path / "o") == 2
  assert "absent.pt" in capsys.readouterr().err


def test_help_explains_every_command(capsys):
  with pytest.raises(SystemExit):
    _run("--help")
  text = capsys.readouterr().out
  for command in ("mvit", "echoprime-text", "hf-bert", "convnext"):
    assert command in text


def test_a_replaced_head_is_recognised_and_explained(tmp_path, capsys):
  sd = dict(tr.torch_convnext((1, 2), (16, 32)).state_dict())
  sd["classifier.weight"], sd["classifier.bias"] = (sd.pop("classifier.2.weight"),
                                                    sd.pop("classifier.2.bias"))
  torch.save(sd, tmp_path / "head.pt")
  assert _run("convnext", "--input", tmp_path / "head.pt", "--output", tmp_path / "o") == 2
  err = capsys.readouterr().err
  assert len(err.strip().splitlines()) == 1  # one line
  import re
  assert re.search(r"hint: classifier\.(weight|bias) looks like classifier\.2\.\1", err), err
  assert not (tmp_path / "o").exists()


def test_a_pickled_class_is_named_in_the_refusal(tmp_path, capsys):
  torch.save({"weight": torch.zeros(2), "payload": Payload(str(tmp_path / "x"))},
             tmp_path / "evil.pt")
  assert _run("convnext", "--input", tmp_path / "evil.pt", "--output", tmp_path / "o") == 2
  err = capsys.readouterr().err
  # the payload's reduce calls open: the refusal names it, without terminal colour codes
  assert "it refers to io.open, which could run code" in err and "\x1b[" not in err
  assert not (tmp_path / "x").exists()


def test_pt_files_need_a_torch_whose_weights_only_cannot_be_bypassed(tmp_path, monkeypatch):
  torch.save({"weight": torch.zeros(2)}, tmp_path / "w.pt")
  monkeypatch.setattr(torch, "__version__", "2.5.1+cpu")  # before the weights_only fix
  with pytest.raises(ValueError, match=r"needs torch >= 2.6 \(found 2.5.1\+cpu\)"):
    state_dict_io.load_state_dict(str(tmp_path / "w.pt"))
  monkeypatch.setattr(torch, "__version__", "2.6.0")
  assert set(state_dict_io.load_state_dict(str(tmp_path / "w.pt"))) == {"weight"}
