"""The WordPiece vocabulary learner: hand-checked merges, ties by text, the size cap, and the
same vocabulary in every process (which `tokenizers`' own trainer does not give)."""

import json
import os
import subprocess
import sys

from echoprime_jax.data import tokenizer as tok_lib
from echoprime_jax.data import wordpiece_vocab

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_merges_by_count_then_by_text():
  # pairs: (l,##o) 7, (##o,##w) 7, (##w,##e) 2, (##e,##r) 2, (n,##e) 3, (##e,##w) 3 ...
  words = {"low": 5, "lower": 2, "new": 3}
  vocab = wordpiece_vocab.learn(words, vocab_size=100, special_tokens=("[UNK]",))
  alphabet = sorted({"l", "##o", "##w", "##e", "##r", "n", "##e"} | set("lowernew"))
  assert vocab[:1 + len(alphabet)] == ["[UNK]"] + alphabet
  merges = vocab[1 + len(alphabet):]
  # count 7 tie: ("##o", "##w") < ("l", "##o") as text, so "##ow" first; then "low" (7)
  assert merges[:2] == ["##ow", "low"]
  assert merges[2:4] == ["##ew", "new"]  # count 3: (##e,##w) < (n,##e) by text; then n+##ew
  assert merges[4:] == ["##er", "lower"]  # count 2
  # every word is now a single token and nothing is left to merge
  assert wordpiece_vocab.learn(words, vocab_size=100) == vocab[1:]


def test_vocab_size_caps_the_merges():
  words = {"abcdef": 4, "abcxyz": 3}
  full = wordpiece_vocab.learn(words, vocab_size=1000)
  capped = wordpiece_vocab.learn(words, vocab_size=len(full) - 3)
  assert capped == full[:-3]
  # pairs seen fewer than min_frequency times are not merged: "xyz" (3) stays in pieces
  frequent = wordpiece_vocab.learn(words, vocab_size=1000, min_frequency=4)
  assert frequent[-5:] == ["##bc", "abc", "##de", "##def", "abcdef"]  # ties by text
  assert not any("x" in t and len(t.strip("#")) > 1 for t in frequent)


_LEARN = """
import sys
from echoprime_jax.data import tokenizer
texts = [f"Ejection fraction is {40 + i % 30}%. The left atrium is {w} dilated."
         for i, w in enumerate(["mildly", "moderately", "severely", "not"] * 30)]
tokenizer.train_wordpiece(texts, sys.argv[1], vocab_size=120)
"""


def test_the_same_texts_give_the_same_vocabulary_in_every_process(tmp_path):
  vocabs = []
  for i in range(3):  # separate processes: a hash-seeded trainer would differ between them
    out = tmp_path / f"tok{i}"
    subprocess.run([sys.executable, "-c", _LEARN, str(out)], cwd=ROOT, check=True,
                   capture_output=True, timeout=120)
    vocabs.append(json.load(open(out / "tokenizer.json"))["model"]["vocab"])
  assert len(vocabs[0]) == 120
  assert vocabs[0] == vocabs[1] == vocabs[2]
  tok = tok_lib.load_tokenizer(str(tmp_path / "tok0"))
  ids = tok("The left atrium is mildly dilated.", add_special_tokens=False)["input_ids"]
  assert tok.unk_token_id not in ids
  assert tok.decode(ids) == "the left atrium is mildly dilated."
  # a word starting with a character never seen at a word's start is spelled, not [UNK]
  assert tok.unk_token_id not in tok("%0", add_special_tokens=False)["input_ids"]
