"""BERT parity with Hugging Face `BertModel` (tiny and BiomedBERT-base at 512 tokens)."""

import numpy as np
import pytest
import torch

from echoprime_jax.models import bert
from echoprime_jax.weights import bert_weights
from tests import torch_reference as tr
from tests.jit_helpers import jit_apply


def _compare(size: str, length: int, pad_from: tuple[int, ...]):
  import transformers
  torch.manual_seed(0)
  hf_cfg = tr.hf_bert_config(size)
  torch_model = transformers.BertModel(hf_cfg).eval()
  tr._randomise_norms(torch_model)
  cfg = bert.BertConfig.from_hf(hf_cfg.to_dict())
  model = bert_weights.load_bert(tr.state_dict_numpy(torch_model), cfg)
  model.eval()
  ids, mask, types = tr.token_batch(hf_cfg.vocab_size, length, pad_from)
  with torch.no_grad():
    ref = torch_model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask),
                      token_type_ids=torch.from_numpy(types)).last_hidden_state.numpy()
  out = np.asarray(jit_apply(model, ids, mask, types))
  assert out.shape == ref.shape == (len(pad_from), length, hf_cfg.hidden_size)
  np.testing.assert_allclose(out, ref, atol=1e-4, rtol=0)
  return out


def test_tiny_bert_matches_transformers_with_padding_and_token_types():
  _compare("tiny", 48, pad_from=(48, 17))


def test_bert_base_512_tokens_matches_transformers():
  """BiomedBERT-base shape: 12 x 768, LayerNorm eps 1e-12, 512 tokens, one row padded."""
  _compare("base", 512, pad_from=(512, 300))


def test_config_from_hf_reads_fields_and_rejects_unsupported():
  cfg = bert.BertConfig.from_hf({"vocab_size": 28895, "hidden_size": 768,
                                 "layer_norm_eps": 1e-12, "architectures": ["BertForMaskedLM"]})
  assert cfg.vocab_size == 28895 and cfg.layer_norm_eps == 1e-12
  with pytest.raises(ValueError, match="position embeddings"):
    bert.BertConfig.from_hf({"position_embedding_type": "relative_key"})
  with pytest.raises(ValueError, match="hidden_act"):
    bert.BertConfig.from_hf({"hidden_act": "swish"})


def test_padded_kernel_inputs_match_with_right_padded_reports():
  """attention="xla_padded": the cuDNN path's inputs (mask as report lengths) through XLA give
  the same hidden states as the mask path, padding positions included."""
  import dataclasses

  from flax import nnx
  cfg = bert.bert_tiny(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
  ids, mask, types = tr.token_batch(cfg.vocab_size, 40, (40, 13))
  outs = []
  for kind in ("xla", "xla_padded"):
    model = bert.Bert(dataclasses.replace(cfg, attention=kind), rngs=nnx.Rngs(0))
    model.eval()
    outs.append(np.asarray(jit_apply(model, ids, mask, types)))
  assert np.abs(outs[0]).max() > 0.1
  np.testing.assert_allclose(outs[1], outs[0], atol=2e-5, rtol=0)
