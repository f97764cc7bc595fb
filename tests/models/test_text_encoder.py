"""EchoPrime text encoder (BertForMaskedLM backbone + projection of [CLS]) at full size."""

import numpy as np
import torch

from echoprime_jax.weights import bert_weights
from tests import torch_reference as tr
from tests.jit_helpers import jit_apply


def test_echoprime_text_encoder_matches_reference_at_512_tokens():
  torch.manual_seed(0)
  reference = tr.EchoPrimeTextReference(tr.hf_bert_config("base"), out_dim=512).eval()
  tr._randomise_norms(reference)
  sd = tr.state_dict_numpy(reference)
  assert any(k.startswith("backbone.cls.") for k in sd)  # the MLM head is present and ignored
  model = bert_weights.load_echoprime_text_encoder(sd)
  model.eval()
  assert model.config.out_dim == 512 and model.config.bert.num_hidden_layers == 12
  ids, mask, _ = tr.token_batch(30522, 512, pad_from=(512, 123))
  with torch.no_grad():
    ref = reference(torch.from_numpy(ids), torch.from_numpy(mask)).numpy()
  out = np.asarray(jit_apply(model, ids, mask))
  assert out.shape == (2, 512)
  np.testing.assert_allclose(out, ref, atol=1e-4, rtol=0)
  assert np.abs(out[0] - out[1]).max() > 1e-2
