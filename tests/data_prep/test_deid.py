"""Keyed pseudonyms: stable, key-dependent, domain-separated, and refused without a key."""

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
