"""A WordPiece vocabulary learned from text, deterministically.

`tokenizers`' WordPieceTrainer numbers symbols in hash-map order (Rust's per-process random
seed), so merges of equal count are taken in a different order on every run: the same reports
give a different vocabulary each time (measured: 3 runs, 3 vocabularies, ~12 of 271 tokens
differing), hence a differently initialised text tower and different training results. This
is the same algorithm (BPE merges over words, continuation pieces prefixed "##", every merge
kept as a token) with ties broken by the pieces' text, so a run is reproducible.

    vocab = learn(words, vocab_size)  # words: {word: count} after BERT normalisation and
                                      # pre-tokenisation (see `word_counts`)
"""

from __future__ import annotations

import collections
import heapq
from typing import Iterable

PREFIX = "##"


def word_counts(texts: Iterable[str], normalizer, pre_tokenizer) -> collections.Counter:
  """{word: occurrences} of texts under a `tokenizers` normalizer and pre-tokenizer."""
  counts: collections.Counter = collections.Counter()
  for text in texts:
    normalized = normalizer.normalize_str(text)
    counts.update(word for word, _ in pre_tokenizer.pre_tokenize_str(normalized))
  return counts


def _merged(a: str, b: str) -> str:
  return a + b[len(PREFIX):]


def learn(words: dict[str, int], vocab_size: int, special_tokens: tuple[str, ...] = (),
          min_frequency: int = 0) -> list[str]:
  """-> tokens in id order: special tokens, the alphabet (every character, and "##c" for each
  seen after a word's start), then each merge's result in the order learned. Merges go on until
  `vocab_size` tokens or no adjacent pair is left occurring `min_frequency` times (0, as in
  `tokenizers`: until every word is one token). The most frequent pair
  is merged first; equal counts go by the pair's text, so the result depends on the counts
  only."""
  symbols = [[w[0]] + [PREFIX + c for c in w[1:]] for w in words]
  freq = list(words.values())
  # every character also stands alone (as in `tokenizers`): a word starting with a character
  # only ever seen inside words is still spelled out, not [UNK]
  alphabet = sorted({s for word in symbols for s in word} | {c for w in words for c in w})
  vocab = list(special_tokens) + [s for s in alphabet if s not in special_tokens]
  known = set(vocab)

  pairs: collections.Counter = collections.Counter()
  where: dict[tuple[str, str], set[int]] = collections.defaultdict(set)
  for i, word in enumerate(symbols):
    for pair in zip(word, word[1:]):
      pairs[pair] += freq[i]
      where[pair].add(i)
  # max-heap by (count, then the smaller text first); stale entries are skipped when popped
  heap = [(-n, pair) for pair, n in pairs.items()]
  heapq.heapify(heap)

  while len(vocab) < vocab_size and heap:
    n, pair = heapq.heappop(heap)
    if -n != pairs.get(pair, 0):
      continue  # stale: the count changed since this entry was pushed
    if -n < min_frequency:
      break
    new = _merged(*pair)
    if new not in known:
      vocab.append(new)
      known.add(new)
    changed: set[tuple[str, str]] = set()
    for i in sorted(where.pop(pair, ())):
      word = symbols[i]
      for old in zip(word, word[1:]):  # this word's pairs leave the counts, come back merged
        pairs[old] -= freq[i]
        where[old].discard(i)
        changed.add(old)
      out, j = [], 0
      while j < len(word):
        if j + 1 < len(word) and (word[j], word[j + 1]) == pair:
          out.append(new)
          j += 2
        else:
          out.append(word[j])
          j += 1
      symbols[i] = out
      for p in zip(out, out[1:]):
        pairs[p] += freq[i]
        where[p].add(i)
        changed.add(p)
    pairs.pop(pair, None)
    for p in changed:
      if pairs.get(p, 0) > 0:
        heapq.heappush(heap, (-pairs[p], p))
      else:
        pairs.pop(p, None)
  return vocab
