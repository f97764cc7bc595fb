"""Keyed pseudonyms: stable, key-dependent, domain-separated, and refused without a key."""

import dataclasses

import pytest

from data_prep import deid


def test_pseudonyms_are_stable_keyed_and_domain_separated():
  a = deid.Pseudonymizer(b"k" * 32)
  b = deid.Pseudonymizer(b"j" * 32)
  assert a.study("1.2.3") == a.study("1.2.3")
  assert a.study("1.2.3") != b.study("1.2.3")
  assert a.study("12345") != a.patient("12345")
  assert len(a.video("1.2.3.4")) == deid.DIGEST_HEX
  assert "1.2.3" not in a.study("1.2.3")
  with pytest.raises(ValueError):
    a.patient("")


def test_key_sources_and_refusal(tmp_path, monkeypatch):
  monkeypatch.delenv(deid.KEY_ENV, raising=False)
  with pytest.raises(deid.MissingKeyError, match="--insecure-test-key"):
    deid.load_key()
  assert deid.Pseudonymizer(deid.load_key(insecure_test_key=True)).insecure
  monkeypatch.setenv(deid.KEY_ENV, "an environment key of enough length")
  assert deid.load_key() == b"an environment key of enough length"
  key_file = tmp_path / "key"
  key_file.write_bytes(b"a file key that is long enough\n")
  assert deid.load_key(str(key_file)) == b"a file key that is long enough"
  key_file.write_bytes(b"short")
  with pytest.raises(deid.MissingKeyError, match="16 bytes"):
    deid.load_key(str(key_file))


def test_key_source_names_the_key_without_holding_it(tmp_path, monkeypatch):
  import pickle
  monkeypatch.delenv(deid.KEY_ENV, raising=False)
  key_file = tmp_path / "key"
  key_file.write_bytes(b"a file key that is long enough\n")
  source = deid.KeySource.from_args(str(key_file), False)
  assert source == deid.KeySource(str(key_file), deid.KEY_ENV, False)
  assert source.load() == b"a file key that is long enough"
  assert b"long enough" not in pickle.dumps(source) and "long enough" not in repr(source)
  assert str(key_file) in repr(source)  # where the key is, which is what a reader needs
  # the environment variable: by name only, read when loading
  monkeypatch.setenv(deid.KEY_ENV, "an environment key of enough length")
  env = deid.KeySource.from_args(None, False)
  assert env.key_file is None and env.load() == b"an environment key of enough length"
  assert "environment key" not in repr(env) and b"environment key" not in pickle.dumps(env)
  assert deid.KeySource(None, "OTHER_VAR", True).load() == deid.INSECURE_TEST_KEY
  monkeypatch.setenv("OTHER_VAR", "short")
  with pytest.raises(deid.MissingKeyError, match=r"\$OTHER_VAR must hold at least 16"):
    deid.KeySource(None, "OTHER_VAR").load()
  monkeypatch.delenv(deid.KEY_ENV)
  with pytest.raises(deid.MissingKeyError, match="--insecure-test-key"):
    deid.KeySource.from_args(None, False).load()
  with pytest.raises(dataclasses.FrozenInstanceError):
    source.key_file = "other"
