"""Anatomical-attention MIL: `--config configs/mil.py:VARIANT`.

The stage embeds every video and report section of the train and eval splits once with frozen
towers (cached in WORKDIR/embeddings/), then trains a gated-attention aggregator per report
section against the text tower's section embeddings (`echoprime_jax/train/stages/mil.py`).

Variants:
  echoprime  MViT-S + BiomedBERT-base towers, up to 32 videos per study. Towers from a
             pretraining run (--config.towers_from=RUN_DIR) or from converted EchoPrime weights
             (--config.init.video=..., --config.init.text=..., --config.data.tokenizer=...).
  tiny       the tiny towers (8x64x64 clips): pair it with a `configs/pretrain.py:tiny` run.
--config.table=echoprime_table.csv evaluates (and exports with) EchoPrime's fixed table instead
of training.
"""

import ml_collections

from configs import moved_fields, towers


def get_config(arg: str = "echoprime") -> ml_collections.ConfigDict:
  if arg not in ("echoprime", "tiny"):
    raise ValueError(f"unknown mil variant {arg!r}; choose echoprime or tiny")
  c = ml_collections.ConfigDict()
  c.stage = "mil"
  c.variant = arg
  c.seed = 0
  c.dtype = "float32"  # compute dtype of the frozen towers while embedding

  # Where the frozen towers come from: a pretraining run folder (its config, tokenizer and best
  # checkpoint; the run then records that run's `towers` as its own), else `towers` + converted
  # weights in `init` + `data.tokenizer`.
  c.towers_from = ""
  c.towers = towers.get_config(arg)
  c.init = dict(video="", text="")
  c.table = ""  # an EchoPrime-format CSV: use it as a fixed aggregator, no training

  c.data = dict(dir="", tokenizer="", train_split="train", eval_split="val", section_len=128,
                max_videos=32, embed_batch_size=32, vocab_size=8000)
  # attention: "gated" (learned) or "uniform" (the projection alone: the ablation)
  c.mil = dict(hidden_dim=128, init_temperature=0.07, max_log_scale=4.6052, attention="gated")

  c.mesh = dict(data=-1, fsdp=1)
  c.min_fsdp_size = 2 ** 20  # the aggregator is small: replicate it
  c.batch_size = 64  # studies per step (global): the contrastive negatives of each section
  c.epochs = 100.0
  c.total_steps = 0  # 0: from epochs and the number of training studies
  c.optim = dict(learning_rate=1e-3, warmup_steps=100, end_lr_fraction=0.0, weight_decay=1e-4,
                 b1=0.9, b2=0.999, eps=1e-8, grad_clip=1.0, accumulate=1, lr_multipliers={})

  c.log_every = 50
  c.eval_every = 500
  c.checkpoint_every = 500
  c.keep_checkpoints = 3
  c.best_metric = "section_R@1"  # held-out section retrieval (see train/stages/mil.py)
  c.eval_batch_size = 64
  c.peak_tflops = 0.0

  if arg == "tiny":
    c.data.max_videos = 16
    c.data.embed_batch_size = 16
    c.data.vocab_size = 1000
    c.batch_size = 16
    c.epochs = 60.0
    c.optim.warmup_steps = 20
    c.log_every, c.eval_every, c.checkpoint_every = 10, 100, 100
    c.eval_batch_size = 16
  return moved_fields.add(c)
