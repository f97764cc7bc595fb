"""Keyed pseudonyms for study, patient and video identifiers.

Identifiers leave data prep only as HMAC-SHA256 digests under a secret key, with a different
domain per kind so that a study and a patient with the same raw ID never share a pseudonym.
Without the key a pseudonym cannot be linked back (or brute-forced from guessable IDs such as
medical record numbers); with it, the data owner can regenerate the mapping.

The key comes from a file or an environment variable. Running without one is refused, except
with an explicit insecure test key (tests, the synthetic demo): its outputs must never be used
for real data, and records say which key kind produced them.
"""

from __future__ import annotations

import hashlib
import hmac
import os

KEY_ENV = "ECHOPRIME_DEID_KEY"
INSECURE_TEST_KEY = b"echoprime-jax insecure test key: synthetic data only"
DIGEST_HEX = 20  # 80 bits: collision-free for any archive size we will meet


class MissingKeyError(RuntimeError):
  pass


def load_key(key_file: str | None = None, insecure_test_key: bool = False) -> bytes:
  """The pseudonymisation key: --key-file, else $ECHOPRIME_DEID_KEY, else refuse."""
  if key_file:
    with open(key_file, "rb") as f:
      key = f.read().strip()
    if len(key) < 16:
      raise MissingKeyError(f"{key_file}: the key must be at least 16 bytes")
    return key
  if os.environ.get(KEY_ENV):
    key = os.environ[KEY_ENV].encode()
    if len(key) < 16:
      raise MissingKeyError(f"${KEY_ENV} must hold at least 16 characters")
    return key
  if insecure_test_key:
    return INSECURE_TEST_KEY
  raise MissingKeyError(
      "no de-identification key: pass --key-file FILE or set $" + KEY_ENV + " (keep it secret "
      "and stable: the same key gives the same pseudonyms across runs); for synthetic data "
      "only, --insecure-test-key")


class Pseudonymizer:
  """raw identifier -> stable hex pseudonym, per kind ("study", "patient", "video")."""

  def __init__(self, key: bytes):
    self._key = key
    self.insecure = key == INSECURE_TEST_KEY

  def __call__(self, kind: str, raw: str) -> str:
    if not raw:
      raise ValueError(f"empty {kind} identifier")
    msg = f"{kind}\x00{raw.strip()}".encode()
    return hmac.new(self._key, msg, hashlib.sha256).hexdigest()[:DIGEST_HEX]

  def study(self, raw: str) -> str:
    return self("study", raw)

  def patient(self, raw: str) -> str:
    return self("patient", raw)

  def video(self, raw: str) -> str:
    return self("video", raw)
