"""View classification: `--config configs/views.py:VARIANT`.

Variants:
  echoprime  ConvNeXt-base on frame 0 at 224x224, the 11 coarse views: the shape of EchoPrime's
             released classifier (start from it with --config.init=towers/views, the output
             of `convert_weights convnext`).
  small      ConvNeXt-small: the same task, ~1.7x cheaper per frame.
  tiny       a 2-stage toy ConvNeXt on 64x64 frames: minutes on 2 CPU cores, for the demo and
             the tests (shards converted with --size 64).
--config.taxonomy=fine trains the 58-view classifier (shards labelled with its view names).
Every field can be overridden: `--config.data.frames=4` averages the logits of 4 frames per
clip; `--config.balance=none` turns off the class-balanced loss.
"""

import ml_collections


def get_config(arg: str = "echoprime") -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.stage = "views"
  c.variant = arg
  c.seed = 0
  c.arch = {"echoprime": "base", "small": "small", "tiny": "test"}.get(arg)
  if c.arch is None:
    raise ValueError(f"unknown views variant {arg!r}; choose echoprime, small or tiny")
  c.image_size = 64 if arg == "tiny" else 224
  c.dtype = "float32"
  c.dropout = -1.0  # >= 0: override stochastic depth (-1: the architecture's default)
  # Label space: "coarse" (EchoPrime's 11 views), "fine" (data_prep/taxonomies/fine_58.csv:
  # 58 B-mode and colour-Doppler views, reported as coarse too), or a taxonomy CSV path.
  c.taxonomy = "coarse"
  # Fine taxonomies: + this weight x the cross-entropy of the rolled-up coarse prediction.
  c.coarse_loss_weight = 1.0

  # frames: frames read per clip (their logits are averaged); training reads them from a
  # random start, evaluation from frame 0 (frames=1: the reference's frame 0).
  c.data = dict(dir="", train_split="train", eval_split="val", frames=1, augment=True,
                read_threads=4, read_buffer=8, workers=0)
  # Loss weights 1 / class frequency (normalised to mean 1 over the training videos), so rare
  # views count as much as common ones; "none" for plain cross-entropy.
  c.balance = "inverse_frequency"
  c.label_smoothing = 0.0

  c.mesh = dict(data=-1, fsdp=1)
  c.min_fsdp_size = 2 ** 14
  c.batch_size = 64
  c.epochs = 30.0
  c.total_steps = 0  # 0: from epochs and the number of labelled training videos
  c.optim = dict(learning_rate=1e-4, warmup_steps=500, end_lr_fraction=0.0, weight_decay=0.05,
                 b1=0.9, b2=0.999, eps=1e-8, grad_clip=1.0, accumulate=1, lr_multipliers={})
  c.init = ""  # Orbax folder from `convert_weights convnext`; "" = from scratch

  c.log_every = 50
  c.eval_every = 1000
  c.checkpoint_every = 1000
  c.keep_checkpoints = 3
  c.best_metric = "balanced_accuracy"
  c.eval_batch_size = 64
  c.peak_tflops = 0.0

  if arg == "tiny":
    c.batch_size = 32
    # Measured on 100 synthetic studies (56 train / 44 val; 60 epochs = 477 steps): held-out
    # accuracy 0.83 / 0.96 / 0.98 / 0.985 at steps 100 / 200 / 300 / 477 without augmentation;
    # with it 0.61 / 0.69 / 0.81 / 0.82 at steps 100-400 (RandAugment's turns and shifts move
    # the sector, which is what tells views apart at 64 px).
    c.data.augment = False
    c.epochs = 60.0
    c.optim.learning_rate = 1e-3
    c.optim.warmup_steps = 20
    c.optim.weight_decay = 0.01
    c.dropout = 0.0
    c.log_every, c.eval_every, c.checkpoint_every = 10, 100, 100
    c.eval_batch_size = 32
  return c
