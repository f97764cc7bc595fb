"""Contrastive video-report pretraining: `--config configs/pretrain.py:VARIANT`.

Variants:
  echoprime  the paper: MViTv2-S (16x224x224) + BiomedBERT-base (512 tokens), global batch 32,
             60 epochs, AdamW, RandAugment + random erasing. Point --config.data.dir at shards
             from data_prep and --config.data.tokenizer at the BiomedBERT tokenizer directory;
             --config.init.video / .text at converted towers to start from EchoPrime weights.
  tiny       small towers on 8x64x64 clips and 128 tokens (configs/towers.py:tiny): minutes on
             2 CPU cores, for the demo and the tests (shards converted with --size 64).
Every field can be overridden: `--config.optim.learning_rate=1e-4 --config.mesh.fsdp=2`.
"""

import ml_collections

from configs import moved_fields, towers


def get_config(arg: str = "echoprime") -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.stage = "pretrain"
  c.variant = arg
  c.seed = 0
  c.towers = towers.get_config("echoprime" if arg == "echoprime" else "tiny")
  c.dtype = "float32"  # compute dtype (bfloat16 on GPUs); parameters stay float32
  c.dropout = -1.0  # >= 0: override dropout and stochastic depth of both towers (-1: defaults)
  # "blocks": each MViT block and BERT layer recomputes its activations in the backward pass
  # (less memory, one more forward pass of compute); unset: all kept
  c.remat = ml_collections.config_dict.placeholder(str)

  # Clip length and stride, frame size and the report window are the towers' (cfg.towers).
  c.data = dict(dir="", tokenizer="", train_split="train", eval_split="val", augment=True,
                read_threads=4, read_buffer=8, workers=0, vocab_size=8000)
  c.loss = dict(kind="clip", chunked=False, max_log_scale=4.6052)  # log(100): CLIP's clamp

  c.mesh = dict(data=-1, fsdp=1)
  c.min_fsdp_size = 2 ** 14

  c.batch_size = 32  # global, over all processes
  c.epochs = 60.0
  c.total_steps = 0  # 0: from epochs and the training set size
  c.optim = dict(learning_rate=4e-5, warmup_steps=1000, end_lr_fraction=0.0,
                 weight_decay=0.05, b1=0.9, b2=0.999, eps=1e-8, grad_clip=1.0, accumulate=1,
                 # per tower (0 freezes one): --config.optim.lr_multipliers.text=0.1
                 lr_multipliers=dict(video=1.0, text=1.0))
  c.init = dict(video="", text="")  # Orbax tower folders from convert_weights; "" = scratch

  c.log_every = 50
  c.eval_every = 2000
  c.checkpoint_every = 1000
  c.keep_checkpoints = 3  # the newest K, plus the best evaluated step by best_metric
  c.best_metric = "mean_R@10"  # a key of the validation metrics (higher is better); "" = none
  c.eval_batch_size = 64
  c.peak_tflops = 0.0  # per device, for MFU (e.g. 790 for an H200 in bf16); 0 = not logged
  # CPU hosts: "tuned" makes glibc reuse freed memory instead of page-faulting XLA's per-step
  # buffers in again (echoprime_jax/runtime/host_malloc.py; opt-in, see benchmarks/RESULTS.md:
  # MViT-S step 21.5 -> 20.0 s, compile 96 -> 148 s). "system" keeps glibc's defaults. Ignored
  # on GPU/TPU hosts.
  c.host_malloc = "system"

  if arg == "tiny":
    c.data.vocab_size = 1000
    c.batch_size = 8
    c.epochs = 30.0
    # Measured on 100 synthetic studies (61 train / 39 val, chance R@10 0.256), 400 steps:
    # BERT init N(0, 0.02) -> val mean R@10 0.14-0.27 (never leaves loss log(batch));
    # init 0.1 -> 0.45; + no augmentation -> 0.51; init 0.2, no augmentation -> 0.51
    # (0.50 already at step 200). RandAugment's shifts and turns cost more than they give on
    # 61 studies at 64 px; lr 1e-3 is worse (0.33); dropout keeps the start plateau longer.
    c.data.augment = False
    c.optim.learning_rate = 3e-4
    c.dropout = 0.0
    c.optim.warmup_steps = 100  # 20: val mean R@10 0.40 after 300 steps, 100: 0.49
    c.optim.weight_decay = 0.01
    c.log_every, c.eval_every, c.checkpoint_every = 10, 100, 50
    c.eval_batch_size = 8
  elif arg != "echoprime":
    raise ValueError(f"unknown pretrain variant {arg!r}; choose echoprime or tiny")
  return moved_fields.add(c)
