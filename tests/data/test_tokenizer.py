"""Report tokenisation: trained vocab round trip, windows of whole sections, section batches."""

import numpy as np
import pytest

from data_prep import reports
from echoprime_jax.data import tokenizer as tok_lib

CORPUS = [
    "Left Ventricle: The left ventricle is normal in size. LVEF is 55%. [SEP] "
    "Pericardium: There is a small pericardial effusion. [SEP] "
    "Mitral Valve: Mild mitral regurgitation. [SEP]",
    "Left Ventricle: Severely reduced systolic function. LVEF is 25%. [SEP] "
    "Left Atrium: The left atrium is severely dilated. [SEP]",
] * 20


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
  return tok_lib.train_wordpiece(CORPUS, str(tmp_path_factory.mktemp("tok")), vocab_size=300)


def test_trained_tokenizer_is_saved_and_reloaded_for_the_run(tokenizer, tmp_path):
  run = tmp_path / "run"
  first = tok_lib.tokenizer_for_run(str(run / "tokenizer"), None, CORPUS, vocab_size=300)
  again = tok_lib.tokenizer_for_run(str(run / "tokenizer"), None, ["entirely different text"] * 5)
  text = "Left Atrium: dilated. [SEP]"
  assert first(text)["input_ids"] == again(text)["input_ids"]  # the saved vocab, not retrained
  assert tokenizer.cls_token_id is not None and tokenizer.sep_token_id is not None
  with pytest.raises(FileNotFoundError):
    tok_lib.load_tokenizer(str(tmp_path / "missing"))


def _sections(n: int) -> dict[str, str]:
  names = reports.SECTIONS[:n]
  return {name: "mild finding " * (2 + i % 4) for i, name in enumerate(names)}


def _split_sections(ids: np.ndarray, mask: np.ndarray, enc) -> list[list[int]]:
  body = list(ids[1:mask.sum()])  # drop [CLS] and padding
  out, cur = [], []
  for t in body:
    cur.append(int(t))
    if t == enc.sep_id:
      out.append(cur)
      cur = []
  assert not cur  # every window ends on a section's [SEP]
  return out


def test_long_reports_are_cut_into_windows_of_whole_sections(tokenizer):
  enc = tok_lib.ReportEncoder(tokenizer, max_len=96)
  sections = _sections(16)
  whole = [ids for _, ids in enc.section_pieces(sections)]
  assert sum(len(p) for p in whole) > 2 * 96  # the report does not fit
  assert max(len(p) for p in whole) < 95  # but every section does
  first_ids, first_mask = enc.encode(sections)  # evaluation: the first window
  assert first_ids[0] == enc.cls_id and first_mask.sum() <= 96
  assert _split_sections(first_ids, first_mask, enc) == whole[:len(
      _split_sections(first_ids, first_mask, enc))]
  rng = np.random.default_rng(0)
  seen = set()
  for _ in range(50):
    ids, mask = enc.encode(sections, rng)
    pieces = _split_sections(ids, mask, enc)
    start = whole.index(pieces[0])
    assert pieces == whole[start:start + len(pieces)]  # consecutive whole sections
    seen.add(start)
  assert len(seen) > 2  # training draws different windows


def test_oversize_section_is_truncated_with_its_sep_and_empty_report_is_cls_sep(tokenizer):
  enc = tok_lib.ReportEncoder(tokenizer, max_len=16)
  ids, mask = enc.encode({"Left Ventricle": "normal size " * 40})
  assert mask.sum() == 16 and ids[0] == enc.cls_id and ids[15] == enc.sep_id
  ids, mask = enc.encode({})
  assert list(ids[:3]) == [enc.cls_id, enc.sep_id, enc.pad_id] and mask.sum() == 2


def test_section_batches(tokenizer):
  enc = tok_lib.ReportEncoder(tokenizer, max_len=64, section_len=12)
  sections = {"Pericardium": "small effusion", "Left Ventricle": "normal " * 30}
  ids, mask, present = enc.encode_sections(sections)
  assert ids.shape == mask.shape == (17, 12) and present.shape == (17,)
  lv, pe = tok_lib.SECTION_ORDER.index("Left Ventricle"), tok_lib.SECTION_ORDER.index("Pericardium")
  assert present.sum() == 2 and present[lv] and present[pe]
  assert mask[lv].sum() == 12 and ids[lv, 11] == enc.sep_id  # truncated, [SEP] kept
  assert ids[pe, 0] == enc.cls_id and mask[pe].sum() < 12
  assert mask[~present].sum() == 0
