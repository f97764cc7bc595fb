"""Report tokenisation: the tokenizer, 512-token windows cut at section boundaries, section batches.

Tokenizer: a local Hugging Face tokenizer directory (BiomedBERT's, when the user has it) loaded
with `transformers.AutoTokenizer`; without one (tests, synthetic data) a lowercase BERT
WordPiece vocabulary is learned from the training reports (deterministically:
`wordpiece_vocab`) and saved with the run (`tokenizer_for_run`), so a resumed or exported run
reads text exactly as it trained.

Reports are sections (`data_prep.reports`): each becomes "<Section>: <text> [SEP]" in section
order, EchoPrime's text format. A report longer than `max_len` tokens is cut into windows of
whole sections, [CLS] + sections: training draws one of the maximal windows at random,
evaluation takes the first. A single section longer than a window is truncated (its [SEP]
kept); nothing else ever splits a section.
"""

from __future__ import annotations

import os
from typing import Iterable

import numpy as np

from data_prep import reports

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
SECTION_ORDER = reports.SECTIONS + (reports.OTHER,)


def load_tokenizer(path: str):
  """A Hugging Face tokenizer from a local directory (no network)."""
  from transformers import AutoTokenizer
  if not os.path.isdir(path):
    raise FileNotFoundError(f"{path}: not a tokenizer directory")
  return AutoTokenizer.from_pretrained(path, local_files_only=True)


def train_wordpiece(texts: Iterable[str], out_dir: str, vocab_size: int = 8000):
  """Learns a lowercase BERT WordPiece tokenizer on `texts` (the same texts give the same
  vocabulary: `wordpiece_vocab`), saves it to out_dir, loads it."""
  from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers
  from transformers import BertTokenizerFast

  from echoprime_jax.data import wordpiece_vocab

  normalizer = normalizers.BertNormalizer(lowercase=True)
  pre_tokenizer = pre_tokenizers.BertPreTokenizer()
  words = wordpiece_vocab.word_counts(texts, normalizer, pre_tokenizer)
  if not words:
    raise ValueError(f"{out_dir}: no text to learn a vocabulary from")
  vocab = wordpiece_vocab.learn(words, vocab_size, SPECIAL_TOKENS)
  tok = Tokenizer(models.WordPiece({t: i for i, t in enumerate(vocab)}, unk_token="[UNK]"))
  tok.normalizer = normalizer
  tok.pre_tokenizer = pre_tokenizer
  tok.decoder = decoders.WordPiece()
  os.makedirs(out_dir, exist_ok=True)
  BertTokenizerFast(tokenizer_object=tok).save_pretrained(out_dir)
  return load_tokenizer(out_dir)


def tokenizer_for_run(saved: str, tokenizer_dir: str | None, texts: Iterable[str],
                      vocab_size: int = 8000):
  """The run's tokenizer: the given directory, else the one saved in `saved` (the run
  folder's tokenizer/, `RunFolder.tokenizer`), else a WordPiece vocabulary trained on `texts`
  and saved there."""
  if tokenizer_dir:
    return load_tokenizer(tokenizer_dir)
  if os.path.isdir(saved):
    return load_tokenizer(saved)
  return train_wordpiece(texts, saved, vocab_size)


class ReportEncoder:
  """Sections -> token ids for the text tower (whole report) and the MIL stage (per section)."""

  def __init__(self, tokenizer, max_len: int = 512, section_len: int = 128):
    self.tokenizer = tokenizer
    self.max_len = max_len
    self.section_len = section_len
    self.cls_id = tokenizer.cls_token_id
    self.sep_id = tokenizer.sep_token_id
    self.pad_id = tokenizer.pad_token_id
    if None in (self.cls_id, self.sep_id, self.pad_id):
      raise ValueError("the tokenizer needs [CLS], [SEP] and [PAD] tokens (a BERT tokenizer)")

  def section_pieces(self, sections: dict[str, str]) -> list[tuple[str, list[int]]]:
    """[(section name, ids of "<name>: <text>" + [SEP])] in section order, empty ones dropped."""
    names = [n for n in SECTION_ORDER if sections.get(n, "").strip()]
    if not names:
      return []
    texts = [f"{n}: {sections[n].strip()}" for n in names]  # one batched call: ~5x cheaper
    ids = self.tokenizer(texts, add_special_tokens=False)["input_ids"]
    return [(n, list(i) + [self.sep_id]) for n, i in zip(names, ids)]

  def windows(self, pieces: list[list[int]]) -> list[tuple[int, int]]:
    """Maximal runs of whole sections that fit after [CLS]: [(first, end)] (end exclusive)."""
    budget = self.max_len - 1
    spans, prev_end = [], -1
    for start in range(len(pieces)):
      end, used = start, 0
      while end < len(pieces) and used + len(pieces[end]) <= budget:
        used += len(pieces[end])
        end += 1
      end = max(end, start + 1)  # an oversize section forms a (truncated) window alone
      if end > prev_end:  # not contained in the previous window
        spans.append((start, end))
        prev_end = end
    return spans

  def encode(self, sections: dict[str, str], rng: np.random.Generator | None = None
             ) -> tuple[np.ndarray, np.ndarray]:
    """-> (ids (max_len,) int32, mask (max_len,) int32): [CLS] sections... padded.

    rng None: the first window (evaluation); else a uniformly drawn maximal window.
    """
    pieces = [ids for _, ids in self.section_pieces(sections)]
    ids = [self.cls_id]
    if pieces:
      spans = self.windows(pieces)
      first, end = spans[0] if rng is None else spans[int(rng.integers(len(spans)))]
      for piece in pieces[first:end]:
        ids.extend(piece)
    else:
      ids.append(self.sep_id)  # an empty report is "[CLS] [SEP]"
    if len(ids) > self.max_len:  # one oversize section: cut it, keep its closing [SEP]
      ids = ids[:self.max_len - 1] + [self.sep_id]
    return self._pad(ids, self.max_len)

  def encode_sections(self, sections: dict[str, str]
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-section batches for the MIL stage, in `SECTION_ORDER`.

    -> (ids (S, section_len) int32, mask (S, section_len) int32, present (S,) bool), each
    row "[CLS] <name>: <text> [SEP]" (truncated to section_len, [SEP] kept).
    """
    n = len(SECTION_ORDER)
    ids = np.full((n, self.section_len), self.pad_id, np.int32)
    mask = np.zeros((n, self.section_len), np.int32)
    present = np.zeros((n,), bool)
    for name, piece in self.section_pieces(sections):
      row = [self.cls_id] + piece
      if len(row) > self.section_len:
        row = row[:self.section_len - 1] + [self.sep_id]
      i = SECTION_ORDER.index(name)
      ids[i], mask[i] = self._pad(row, self.section_len)
      present[i] = True
    return ids, mask, present

  def _pad(self, ids: list[int], length: int) -> tuple[np.ndarray, np.ndarray]:
    out = np.full((length,), self.pad_id, np.int32)
    mask = np.zeros((length,), np.int32)
    out[:len(ids)] = ids
    mask[:len(ids)] = 1
    return out, mask
