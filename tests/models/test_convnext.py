"""ConvNeXt parity with torchvision (a 2-stage toy and the full convnext_base view classifier)."""

import numpy as np
import torch

from echoprime_jax.models import convnext
from echoprime_jax.weights import convnext_weights
from tests import torch_reference as tr
from tests.jit_helpers import jit_apply


def _compare(depths, dims, size, batch):
  torch_model = tr.torch_convnext(depths, dims, num_classes=11)
  model = convnext_weights.load_convnext(tr.state_dict_numpy(torch_model))
  model.eval()
  assert model.config.depths == tuple(depths) and model.config.num_classes == 11
  images = np.random.default_rng(0).standard_normal((batch, size, size, 3)).astype(np.float32)
  with torch.no_grad():
    ref = torch_model(torch.from_numpy(images.transpose(0, 3, 1, 2).copy())).numpy()
  out = np.asarray(jit_apply(model, images))
  assert out.shape == ref.shape == (batch, 11)
  np.testing.assert_allclose(out, ref, atol=1e-4, rtol=0)


def test_small_convnext_matches_torchvision():
  _compare((1, 2), (16, 32), size=64, batch=2)


def test_convnext_base_matches_torchvision():
  """EchoPrime's view classifier shape: convnext_base, 11 views, one 224x224 frame."""
  torch_model = tr.torch_convnext((3, 3, 27, 3), (128, 256, 512, 1024))
  assert sum(p.numel() for p in torch_model.parameters()) == 87_577_739
  _compare((3, 3, 27, 3), (128, 256, 512, 1024), size=224, batch=1)


def test_coarse_view_names_are_echoprime_order():
  from data_prep.views import COARSE_VIEWS
  assert COARSE_VIEWS[0] == "A2C" and COARSE_VIEWS[-1] == "Subcostal"
  # the config's default (models/ imports nothing from data_prep) is the taxonomy's size
  assert convnext.ConvNeXtConfig().num_classes == len(COARSE_VIEWS) == 11
