"""The three towers' architectures, big_vision style: `--config configs/towers.py:VARIANT`.

Variants:
  echoprime  MViTv2-S (16x224x224 -> 512), BiomedBERT-base text encoder (512 tokens -> 512),
             ConvNeXt-base view classifier (11 coarse views) -- the released EchoPrime shapes.
  tiny       small towers (8x64x64 clips, 2-layer BERT, 2-stage ConvNeXt) for CPU demos/tests.
Any field can be overridden: `--config.video.num_frames=32`, `--config.dtype=bfloat16`.
"""

import ml_collections


def get_config(arg: str = "echoprime") -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.variant = arg
  c.dtype = "float32"  # compute dtype of all towers; parameters stay float32
  c.batch_size = 1  # used only to report output shapes
  if arg == "echoprime":
    c.video = dict(arch="mvit_v2_s", num_frames=16, image_size=224, num_outputs=512)
    c.text = dict(arch="bert_base", max_length=512, out_dim=512, vocab_size=30522,
                  initializer_range=0.02)  # HF BERT's init (pretrained weights replace it)
    c.views = dict(arch="base", image_size=224, num_classes=11)
  elif arg == "tiny":
    c.video = dict(arch="mvit_tiny", num_frames=8, image_size=64, num_outputs=64)
    # From scratch, BERT's N(0, 0.02) init leaves the [CLS] output identical for every report
    # (cosine 1.00000 over the synthetic reports, which share one template): contrastive
    # training then has no text signal to follow and sits at loss log(batch). At 0.2 the
    # reports start apart (cosine 0.978) and the tiny run learns (see configs/pretrain.py).
    c.text = dict(arch="bert_tiny", max_length=128, out_dim=64, vocab_size=1000,
                  initializer_range=0.2)
    c.views = dict(arch="test", image_size=64, num_classes=11)
  else:
    raise ValueError(f"unknown towers variant {arg!r}; choose echoprime or tiny")
  return c
