"""The video and text towers' architectures, big_vision style: `--config configs/towers.py:VARIANT`.

Every stage that embeds video or text holds one of these as `cfg.towers`; it is the one home of
the towers' input and output sizes (the data pipeline, tokenizer and later stages read them
from here, never from a copy):
  embed_dim          the joint video-report space: the video head's and text projection's output
  video.num_frames   frames per clip, video.clip_stride the step between them, video.image_size
                     the square frame side the clip is resized to
  text.max_length    tokens per report (the tokenizer's window)

Variants:
  echoprime  MViTv2-S (16x224x224 -> 512), BiomedBERT-base text encoder (512 tokens -> 512): the
             released EchoPrime shapes.
  tiny       small towers (8x64x64 clips, 2-layer BERT, 64-d space) for CPU demos and tests.
The view classifier is not a tower of the joint space: its sizes live in configs/views.py.
Any field can be overridden: `--config.video.num_frames=32`, `--config.dtype=bfloat16`.
"""

import ml_collections


def get_config(arg: str = "echoprime") -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.variant = arg
  c.dtype = "float32"  # compute dtype of all towers; parameters stay float32
  c.batch_size = 1  # used only to report output shapes
  if arg == "echoprime":
    c.embed_dim = 512
    c.video = dict(arch="mvit_v2_s", num_frames=16, clip_stride=2, image_size=224)
    # attention_dropout: BERT's attention-probability dropout, 0 here (BiomedBERT's own is
    # 0.1): the fused cuDNN kernel has no per-step dropout in jax's API, and with dropout the
    # layer falls back to float32 (B, heads, 512, 512) probabilities in HBM. Hidden dropout
    # (0.1) stays. A documented choice of this project's pretraining recipe, on every backend.
    c.text = dict(arch="bert_base", max_length=512, vocab_size=30522,
                  initializer_range=0.02,  # HF BERT's init (pretrained weights replace it)
                  attention_dropout=0.0)
  elif arg == "tiny":
    c.embed_dim = 64
    c.video = dict(arch="mvit_tiny", num_frames=8, clip_stride=1, image_size=64)
    # From scratch, BERT's N(0, 0.02) init leaves the [CLS] output identical for every report
    # (cosine 1.00000 over the synthetic reports, which share one template): contrastive
    # training then has no text signal to follow and sits at loss log(batch). At 0.2 the
    # reports start apart (cosine 0.978) and the tiny run learns (see configs/pretrain.py).
    c.text = dict(arch="bert_tiny", max_length=128, vocab_size=1000, initializer_range=0.2)
  else:
    raise ValueError(f"unknown towers variant {arg!r}; choose echoprime or tiny")
  return c
