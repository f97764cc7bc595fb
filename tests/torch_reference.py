"""PyTorch reference models built from our configs (tests only: torch is a test dependency).

Each builder returns a random-initialised torch module in eval mode whose architecture is the
one the Flax config describes, so parity tests compare like with like.
"""

from __future__ import annotations

import numpy as np
import torch

from echoprime_jax.models import mvit

torch.set_num_threads(2)


def torch_mvit(cfg: mvit.MViTConfig, seed: int = 0) -> torch.nn.Module:
  """torchvision `MViT` for `cfg` (head Linear(C, num_outputs)), random weights, eval mode."""
  from torchvision.models.video import mvit as tv_mvit
  torch.manual_seed(seed)
  blocks = [tv_mvit.MSBlockConfig(num_heads=b.num_heads, input_channels=b.input_channels,
                                  output_channels=b.output_channels, kernel_q=list(b.kernel_q),
                                  kernel_kv=list(b.kernel_kv), stride_q=list(b.stride_q),
                                  stride_kv=list(b.stride_kv)) for b in cfg.blocks]
  model = tv_mvit.MViT(spatial_size=tuple(cfg.image_size), temporal_size=cfg.num_frames,
                       block_setting=blocks, residual_pool=cfg.residual_pool,
                       residual_with_cls_embed=cfg.residual_with_cls_embed,
                       rel_pos_embed=cfg.rel_pos, proj_after_attn=cfg.proj_after_attn,
                       stochastic_depth_prob=cfg.stochastic_depth,
                       num_classes=cfg.num_outputs or 1)
  _randomise_norms(model)
  return model.eval()


def _randomise_norms(model: torch.nn.Module) -> None:
  """LayerNorm weights are 1/0 at init; random values make a swapped scale/bias detectable."""
  g = torch.Generator().manual_seed(1234)
  with torch.no_grad():
    for m in model.modules():
      if isinstance(m, torch.nn.LayerNorm) and m.weight is not None:
        m.weight.copy_(1 + 0.1 * torch.randn(m.weight.shape, generator=g))
        m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=g))


def state_dict_numpy(model: torch.nn.Module) -> dict[str, np.ndarray]:
  return {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}


def video_input(shape, seed: int = 0) -> np.ndarray:
  """A normalised-looking clip, channels-last (B, T, H, W, 3) float32."""
  return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def to_torch_video(video: np.ndarray) -> torch.Tensor:
  """(B, T, H, W, C) -> torch (B, C, T, H, W)."""
  return torch.from_numpy(np.ascontiguousarray(video.transpose(0, 4, 1, 2, 3)))
