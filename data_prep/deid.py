"""Keyed pseudonyms for study, patient and video identifiers.

Identifiers leave data prep only as HMAC-SHA256 digests under a secret key, with a different
domain per kind so that a study and a patient with the same raw ID never share a pseudonym.
Without the key a pseudonym cannot be linked back (or brute-forced from guessable IDs such as
medical record numbers); with it, the data owner can regenerate the mapping.

The key comes from a file or an environment variable. Running without one is refused, except
with an explicit insecure test key (tests, the synthetic demo): its outputs must never be used
for real data, and records say which key kind produced them. A `KeySource` names where the key
is without holding it: what a distributed pipeline ships to its workers, each loading the key
itself.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import os

KEY_ENV = "ECHOPRIME_DEID_KEY"
INSECURE_TEST_KEY = b"echoprime-jax insecure test key: synthetic data only"
DIGEST_HEX = 20  # 80 bits: collision-free for any archive size we will meet


class MissingKeyError(RuntimeError):
  pass


@dataclasses.dataclass(frozen=True)
class KeySource:
  """Where the key is (a file, an environment variable), never the key itself: safe to pickle
  into a pipeline graph, log or print. Each process that needs the key calls `load()`."""
  key_file: str | None
  env_var: str | None = KEY_ENV
  insecure_test_key: bool = False

  @classmethod
  def from_args(cls, key_file: str | None, insecure_test_key: bool) -> KeySource:
    """From the --key-file / --insecure-test-key flags ($ECHOPRIME_DEID_KEY as the fallback)."""
    return cls(key_file or None, KEY_ENV, bool(insecure_test_key))

  def load(self) -> bytes:
    """The key: the file, else the environment variable, else (if allowed) the insecure test
    key, else MissingKeyError."""
    if self.key_file:
      with open(self.key_file, "rb") as f:
        key = f.read().strip()
      if len(key) < 16:
        raise MissingKeyError(f"{self.key_file}: the key must be at least 16 bytes")
      return key
    if self.env_var and os.environ.get(self.env_var):
      key = os.environ[self.env_var].encode()
      if len(key) < 16:
        raise MissingKeyError(f"${self.env_var} must hold at least 16 characters")
      return key
    if self.insecure_test_key:
      return INSECURE_TEST_KEY
    env = f" or set ${self.env_var}" if self.env_var else ""
    raise MissingKeyError(
        f"no de-identification key: pass --key-file FILE{env} (keep it secret and stable: "
        "the same key gives the same pseudonyms across runs); for synthetic data only, "
        "--insecure-test-key")

  def __repr__(self) -> str:  # explicit: stays key-free whatever fields are added later
    return (f"KeySource(key_file={self.key_file!r}, env_var={self.env_var!r}, "
            f"insecure_test_key={self.insecure_test_key})")


def load_key(key_file: str | None = None, insecure_test_key: bool = False) -> bytes:
  """The pseudonymisation key: --key-file, else $ECHOPRIME_DEID_KEY, else refuse."""
  return KeySource(key_file, KEY_ENV, insecure_test_key).load()


class Pseudonymizer:
  """raw identifier -> stable hex pseudonym, per kind ("study", "patient", "video")."""

  def __init__(self, key: bytes):
    self._key = key
    self.insecure = key == INSECURE_TEST_KEY

  def __call__(self, kind: str, raw: str) -> str:
    if not raw:
      raise ValueError(f"empty {kind} identifier")
    msg = f"{kind}\x00{raw.strip()}".encode("utf-8", "surrogateescape")  # non-UTF-8 file names
    return hmac.new(self._key, msg, hashlib.sha256).hexdigest()[:DIGEST_HEX]

  def study(self, raw: str) -> str:
    return self("study", raw)

  def patient(self, raw: str) -> str:
    return self("patient", raw)

  def video(self, raw: str) -> str:
    return self("video", raw)
