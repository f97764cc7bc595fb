"""One contrastive pretraining step, JAX vs PyTorch on this machine's CPU, measured in one run.

  python benchmarks/train_step.py                     # both configs, updates RESULTS.md
  python benchmarks/train_step.py --configs tiny --no-write

The step: video tower + text tower forward on one batch, symmetric CLIP loss with a learnable
temperature, backward, global-norm clipping (1.0) and AdamW (weight decay off biases, norms and
embeddings), in training mode (dropout and stochastic depth on). Both sides get the same batch
(uint8 clips normalised inside the step, token ids with padding) and the same architecture:
  tiny     MViT-tiny (8x64x64) + 2-layer BERT (128 tokens), batch 8 -- the `tiny` config;
  mvit_s   MViTv2-S (16x224x224, torchvision's `mvit_v2_s`, head -> 512) + BERT-base (512 tokens,
           BiomedBERT's shape) + Linear 768 -> 512, batch 2 -- the paper's towers.
JAX runs `train.step.jit_train_step` with the pretraining stage's parts (the trainer's own step) on one CPU
device; PyTorch runs torchvision + transformers modules with torch.optim.AdamW. Each framework
and config runs in a fresh process (its own peak RSS); medians over the timed steps after
`--warmup` untimed ones. FLOPs per step are XLA's cost analysis of the compiled JAX step.
Each config is measured under each `--malloc` setting, applied alike to both frameworks:
`system` (glibc's defaults, what the trainer uses unless told otherwise) and `tuned` (the
trainer's opt-in `--config.host_malloc=tuned`, echoprime_jax/runtime/host_malloc.py: freed memory is
reused instead of being page-faulted in again every step).
Requires torch + torchvision + transformers (the test requirements).
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import math
import os
import statistics
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks.common import cpu_name, publish, report, spawn, timed  # noqa: E402
from echoprime_jax.runtime import host_malloc, xla_flags  # noqa: E402

CONFIGS = {"tiny": dict(variant="tiny", batch=8, vocab=1000),
           "mvit_s": dict(variant="echoprime", batch=2, vocab=30522)}
LR, WEIGHT_DECAY, CLIP = 1e-4, 0.05, 1.0


def _stage_config(name: str):
  from configs import pretrain as pretrain_config
  spec = CONFIGS[name]
  cfg = pretrain_config.get_config(spec["variant"])
  cfg.batch_size = spec["batch"]
  cfg.dropout = -1.0  # the towers' own dropout / stochastic depth, as the PyTorch modules have
  cfg.optim.learning_rate, cfg.optim.weight_decay, cfg.optim.grad_clip = LR, WEIGHT_DECAY, CLIP
  cfg.optim.warmup_steps = 0
  return cfg


def _batch(cfg, vocab: int, batch: int) -> dict[str, np.ndarray]:
  rng = np.random.default_rng(0)
  t, s = cfg.towers.video.num_frames, cfg.towers.video.image_size
  length = cfg.towers.text.max_length
  ids = rng.integers(5, vocab, (batch, length)).astype(np.int32)
  mask = np.ones((batch, length), np.int32)
  for b in range(batch):  # reports of different lengths
    n = length - b * (length // (2 * batch))
    ids[b, 0], ids[b, n:], mask[b, n:] = 2, 0, 0
  return {"video": rng.integers(0, 256, (batch, t, s, s, 3), dtype=np.uint8),
          "frame_mask": np.ones((batch, t), bool), "text_ids": ids, "text_mask": mask,
          "study": np.arange(batch, dtype=np.int32)}


# ---------------------------------------------------------------------------------- JAX


def worker_jax(name: str, warmup: int, iters: int) -> dict:
  import time
  import jax
  from flax import nnx
  from echoprime_jax import parallel
  from echoprime_jax.inference import stage_models
  from echoprime_jax.train import optimizer
  from echoprime_jax.train import step as step_lib
  from echoprime_jax.train.stages import pretrain
  cfg = _stage_config(name)
  spec = CONFIGS[name]
  mcfg = stage_models.model_config("pretrain", cfg, vocab_size=spec["vocab"])
  create = lambda: stage_models.create_model("pretrain", mcfg, 0)  # noqa: E731
  graphdef, abstract_params, _ = nnx.split(nnx.eval_shape(create), nnx.Param, ...)
  tx, schedule = optimizer.make_optimizer(cfg.optim, abstract_params, 1000)
  mesh = parallel.make_mesh({"data": 1, "fsdp": 1}, jax.devices()[:1])
  abstract = jax.eval_shape(lambda: step_lib.init_state(create, tx))
  shardings = parallel.tree_shardings(abstract, mesh, cfg.min_fsdp_size)
  state = jax.jit(lambda: step_lib.init_state(create, tx), out_shardings=shardings)()
  step = step_lib.jit_train_step(graphdef, tx, schedule, **pretrain.step_parts(cfg, mesh),
                                 state_shardings=shardings,
                                 batch_sharding=parallel.batch_sharding(mesh))
  batch = jax.device_put(_batch(cfg, spec["vocab"], spec["batch"]),
                         parallel.batch_sharding(mesh))
  t = time.perf_counter()
  compiled = step.lower(state, batch).compile()
  compile_s = time.perf_counter() - t
  holder = {"state": state}

  def run():
    holder["state"], metrics = compiled(holder["state"], batch)
    return jax.block_until_ready(metrics["loss"])

  times = timed(run, warmup, iters)
  return {"times": times, "compile_s": compile_s,
          "flops": step_lib.flops_per_step(compiled), "loss": float(run())}


# ------------------------------------------------------------------------------ PyTorch


def _torch_model(name: str, cfg):
  import torch
  import transformers
  from echoprime_jax.models import from_config
  torch.manual_seed(0)
  spec = CONFIGS[name]
  if name == "mvit_s":
    from torchvision.models.video import mvit_v2_s
    video = mvit_v2_s()
    video.head[-1] = torch.nn.Linear(768, 512)  # EchoPrime's head
    bert_cfg = transformers.BertConfig(vocab_size=spec["vocab"], layer_norm_eps=1e-12)
    out_dim = 512
  else:
    from tests import torch_reference
    video_cfg = from_config.video_config(cfg.towers, "float32")
    video = torch_reference.torch_mvit(video_cfg)
    bert_cfg = torch_reference.hf_bert_config("tiny")
    out_dim = video_cfg.num_outputs

  class TwoTower(torch.nn.Module):
    def __init__(self):
      super().__init__()
      self.video = video
      self.bert = transformers.BertModel(bert_cfg, add_pooling_layer=False)
      self.text_projection = torch.nn.Linear(bert_cfg.hidden_size, out_dim)
      self.log_scale = torch.nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def forward(self, video, ids, mask):
      v = torch.nn.functional.normalize(self.video(video), dim=-1)
      hidden = self.bert(input_ids=ids, attention_mask=mask).last_hidden_state[:, 0]
      t = torch.nn.functional.normalize(self.text_projection(hidden), dim=-1)
      logits = self.log_scale.exp() * v @ t.T
      labels = torch.arange(len(v))
      return 0.5 * (torch.nn.functional.cross_entropy(logits, labels)
                    + torch.nn.functional.cross_entropy(logits.T, labels))

  return TwoTower().train()


def worker_torch(name: str, warmup: int, iters: int) -> dict:
  import torch
  from echoprime_jax.data.normalize import MEAN, STD
  torch.set_num_threads(os.cpu_count() or 1)  # tests.torch_reference pins 2 at import
  cfg = _stage_config(name)
  spec = CONFIGS[name]
  model = _torch_model(name, cfg)
  decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embedding" not in n]
  no_decay = [p for n, p in model.named_parameters() if not (p.ndim >= 2
                                                             and "embedding" not in n)]
  opt = torch.optim.AdamW([{"params": decay, "weight_decay": WEIGHT_DECAY},
                           {"params": no_decay, "weight_decay": 0.0}], lr=LR,
                          betas=(0.9, 0.999), eps=1e-8)
  batch = {k: torch.from_numpy(v) for k, v in _batch(cfg, spec["vocab"], spec["batch"]).items()}
  mean, std = torch.tensor(MEAN), torch.tensor(STD)

  def run():
    video = (batch["video"].float() - mean) / std  # (B, T, H, W, 3) -> (B, 3, T, H, W)
    video = video.permute(0, 4, 1, 2, 3).contiguous()
    opt.zero_grad(set_to_none=True)
    loss = model(video, batch["text_ids"].long(), batch["text_mask"].long())
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP)
    opt.step()
    return float(loss)

  times = timed(run, warmup, iters)
  return {"times": times, "loss": run(), "threads": torch.get_num_threads()}


# ------------------------------------------------------------------------------- parent


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--configs", default=",".join(CONFIGS),
                 help=f"comma-separated subset of {','.join(CONFIGS)} (default: all)")
  p.add_argument("--iters", type=int, default=0,
                 help="timed steps per worker (default: 10 for tiny, 3 for mvit_s)")
  p.add_argument("--warmup", type=int, default=2, help="untimed steps first (default 2)")
  p.add_argument("--rounds", type=int, default=1,
                 help="PyTorch/JAX alternations per config (default 1)")
  p.add_argument("--xla-flags", default=" ".join(xla_flags.CPU_FLAGS),
                 help="XLA_FLAGS for the JAX workers (default: the flags the trainer sets, "
                      "echoprime_jax/runtime/xla_flags.py; pass '' for XLA's defaults)")
  p.add_argument("--malloc", default="tuned,system",
                 help="host allocator settings to measure, comma-separated, each applied to "
                      "BOTH frameworks' workers: 'system' = glibc's defaults (the trainer's "
                      "default), 'tuned' = the trainer's opt-in --config.host_malloc=tuned "
                      "(echoprime_jax/runtime/host_malloc.py: freed memory reused, no per-step "
                      "page faults) (default: both)")
  p.add_argument("--no-write", action="store_true", help="do not update benchmarks/RESULTS.md")
  p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
  p.add_argument("--framework", help=argparse.SUPPRESS)
  p.add_argument("--config", help=argparse.SUPPRESS)
  args = p.parse_args()
  if args.worker:
    if args.malloc == "tuned":  # before torch / JAX start their threads
      host_malloc.keep_freed_memory(force=True)
    fn = worker_jax if args.framework == "jax" else worker_torch
    report(fn(args.config, args.warmup, args.iters))
    return

  mallocs = args.malloc.split(",")
  unknown = [m for m in mallocs if m not in host_malloc.CHOICES]
  if unknown:  # before any measurement starts
    p.error(f"--malloc: unknown setting(s) {unknown} (choose from {host_malloc.CHOICES})")
  rows = []
  for name, malloc in itertools.product(args.configs.split(","), mallocs):
    iters = args.iters or (10 if name == "tiny" else 3)
    runs = {"torch": [], "jax": []}
    for _ in range(args.rounds):
      for fw in ("torch", "jax"):
        env = {"XLA_FLAGS": args.xla_flags} if fw == "jax" else None
        r = spawn(__file__, ["--framework", fw, "--config", name, "--iters", str(iters),
                             "--warmup", str(args.warmup), "--malloc", malloc], env)
        runs[fw].append(r)
        print(f"{name} {fw} ({malloc} malloc): median {statistics.median(r['times']):.3f} "
              f"s/step, loss {r['loss']:.3f}, peak RSS {r['peak_rss_mb']:.0f} MB", flush=True)
    t = {fw: statistics.median([x for r in runs[fw] for x in r["times"]]) for fw in runs}
    jax_run = runs["jax"][0]
    rows.append({"name": name, "malloc": malloc, "batch": CONFIGS[name]["batch"],
                 "torch_s": t["torch"], "jax_s": t["jax"], "ratio": t["jax"] / t["torch"],
                 "gflop": jax_run["flops"] / 1e9, "compile_s": jax_run["compile_s"],
                 "torch_rss": max(r["peak_rss_mb"] for r in runs["torch"]),
                 "jax_rss": max(r["peak_rss_mb"] for r in runs["jax"])})

  lines = [
      f"### Train step: JAX vs PyTorch ({datetime.date.today().isoformat()}, {cpu_name()}, "
      f"{os.cpu_count()} cores)",
      "",
      "Video + text towers, CLIP loss, backward, clipping, AdamW; same batch and architecture; "
      f"fp32; {args.warmup} warm-up steps, then the median step over {args.rounds} "
      f"alternating PyTorch / JAX round(s). XLA_FLAGS: `{args.xla_flags or '(none)'}`; torch "
      "with all cores. Host malloc (both frameworks alike): system = glibc's defaults (the "
      "trainer's default), tuned = the trainer's opt-in `--config.host_malloc=tuned` "
      "(`echoprime_jax/runtime/host_malloc.py`: one arena, no mmap, no trim).",
      "",
      "| config | host malloc | batch | GFLOP/step (XLA) | PyTorch s | JAX s | JAX/PyTorch "
      "| JAX GFLOP/s | JAX compile s | PyTorch peak RSS MB | JAX peak RSS MB |",
      "|---|---|---|---|---|---|---|---|---|---|---|",
  ]
  for r in rows:
    lines.append(f"| {r['name']} | {r['malloc']} | {r['batch']} | {r['gflop']:.1f} | "
                 f"{r['torch_s']:.3f} | {r['jax_s']:.3f} | **{r['ratio']:.2f}** | "
                 f"{r['gflop'] / r['jax_s']:.0f} | "
                 f"{r['compile_s']:.1f} | {r['torch_rss']:.0f} | {r['jax_rss']:.0f} |")
  lines += ["", "Reproduce: `python benchmarks/train_step.py --rounds "
            f"{args.rounds}{' --iters ' + str(args.iters) if args.iters else ''}`."]
  publish("train_step", lines, write=not args.no_write)


if __name__ == "__main__":
  main()
