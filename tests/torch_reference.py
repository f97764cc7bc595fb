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


def torch_convnext(depths, dims, num_classes: int = 11, seed: int = 0) -> torch.nn.Module:
  """torchvision `ConvNeXt` with the given stages; random norms and layer scales, eval mode."""
  from torchvision.models import convnext as tv_convnext
  torch.manual_seed(seed)
  setting = [tv_convnext.CNBlockConfig(d, dims[i + 1] if i + 1 < len(dims) else None, n)
             for i, (d, n) in enumerate(zip(dims, depths))]
  model = tv_convnext.ConvNeXt(setting, stochastic_depth_prob=0.1, num_classes=num_classes)
  _randomise_norms(model)
  g = torch.Generator().manual_seed(seed + 1)
  with torch.no_grad():  # 1e-6 layer scales would hide every bug inside the blocks
    for name, p in model.named_parameters():
      if name.endswith("layer_scale"):
        p.copy_(0.1 + 0.5 * torch.rand(p.shape, generator=g))
  return model.eval()


def hf_bert_config(size: str):
  import transformers
  if size == "base":  # BiomedBERT-base-uncased's config.json values
    return transformers.BertConfig(vocab_size=30522, hidden_size=768, num_hidden_layers=12,
                                   num_attention_heads=12, intermediate_size=3072,
                                   max_position_embeddings=512, layer_norm_eps=1e-12)
  return transformers.BertConfig(vocab_size=1000, hidden_size=64, num_hidden_layers=2,
                                 num_attention_heads=4, intermediate_size=128,
                                 max_position_embeddings=128, layer_norm_eps=1e-12)


class EchoPrimeTextReference(torch.nn.Module):
  """EchoPrime's text encoder layout: BertForMaskedLM backbone + text_projection on [CLS]."""

  def __init__(self, config, out_dim: int = 512):
    super().__init__()
    import transformers
    self.backbone = transformers.BertForMaskedLM(config)
    self.text_projection = torch.nn.Linear(config.hidden_size, out_dim)

  def forward(self, input_ids, attention_mask):
    hidden = self.backbone.bert(input_ids=input_ids, attention_mask=attention_mask)
    return self.text_projection(hidden.last_hidden_state[:, 0])


def token_batch(vocab: int, length: int, pad_from: tuple[int, ...], seed: int = 0):
  """ids, mask, token types (B = len(pad_from)); row i is padded (id 0) from pad_from[i]."""
  rng = np.random.default_rng(seed)
  b = len(pad_from)
  ids = rng.integers(5, vocab, (b, length))
  ids[:, 0] = 2  # a [CLS]-like id
  mask = np.ones((b, length), np.int64)
  for i, start in enumerate(pad_from):
    ids[i, start:] = 0
    mask[i, start:] = 0
  types = np.zeros_like(ids)
  types[0, length // 2:] = 1
  return ids, mask, types
