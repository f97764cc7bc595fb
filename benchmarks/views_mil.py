"""View classification (videos/s) and MIL pooling (studies/s), JAX vs PyTorch on this CPU, in one run.

  python benchmarks/views_mil.py                 # all cases, updates RESULTS.md
  python benchmarks/views_mil.py --cases mil --no-write

Cases (evaluation mode, fp32, the same shapes on both sides, random weights):
  views_base  ConvNeXt-base on frame 0 at 224x224, 11 views (EchoPrime's released classifier):
              JAX runs `view_predictor.predict_step` (uint8 frames normalised inside the jitted
              step, as the stage does); PyTorch runs torchvision `convnext_base` under
              `torch.inference_mode` on the same normalised frames. Batch --views-batch.
  views_tiny  the tiny config's 2-stage ConvNeXt at 64x64 (what the tests train).
  mil         gated-attention MIL (523 -> 128 hidden, 15 section heads, 512 -> 512 projection)
              over --mil-batch studies x 32 video slots (a quarter of them padding): JAX runs
              `mil.GatedAttentionMIL` jitted; PyTorch the same module written with torch.nn
              (masked softmax, attended mean, projection).
  mil_train   one MIL training step (section InfoNCE, AdamW) on the same batch: the stage's
              the trainer's step with the MIL stage's parts vs the same loss and optimizer in PyTorch.
Each framework and case runs in a fresh process; medians over the timed calls after --warmup.
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks.common import cpu_name, publish, report, spawn, timed  # noqa: E402
from echoprime_jax.runtime import xla_flags  # noqa: E402

CASES = ("views_base", "views_tiny", "mil", "mil_train")
VIDEOS, SECTIONS, DIM, VIEWS, HIDDEN = 32, 15, 512, 11, 128


def _frames(batch: int, size: int) -> np.ndarray:
  return np.random.default_rng(0).integers(0, 256, (batch, 1, size, size, 3), dtype=np.uint8)


def _study_batch(batch: int) -> dict[str, np.ndarray]:
  rng = np.random.default_rng(0)
  emb = rng.standard_normal((batch, VIDEOS, DIM)).astype(np.float32)
  emb /= np.linalg.norm(emb, axis=-1, keepdims=True)
  views = rng.integers(0, VIEWS, (batch, VIDEOS))
  features = np.concatenate([emb, np.eye(VIEWS, dtype=np.float32)[views]], -1)
  mask = np.arange(VIDEOS)[None] < rng.integers(VIDEOS // 2, VIDEOS + 1, (batch, 1))
  targets = rng.standard_normal((batch, SECTIONS, DIM)).astype(np.float32)
  text = rng.integers(0, 4, (batch, SECTIONS)).astype(np.int32) + 4 * np.arange(SECTIONS)
  text[rng.random(text.shape) < 0.2] = -1  # absent sections
  return {"features": features, "video_mask": mask, "targets": targets, "target_text": text,
          "valid": np.ones((batch,), bool)}


def _views_config(case: str):
  from configs import views as views_config
  cfg = views_config.get_config("echoprime" if case == "views_base" else "tiny")
  return cfg


# ---------------------------------------------------------------------------------- JAX


def worker_jax(case: str, batch: int, warmup: int, iters: int) -> dict:
  import functools
  import time

  import jax
  import jax.numpy as jnp
  from flax import nnx

  if case.startswith("views"):
    from echoprime_jax.inference import stage_models, view_predictor
    cfg = _views_config(case)
    model = stage_models.create_model("views", stage_models.model_config("views", cfg), 0)
    model.eval()
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    fn = jax.jit(functools.partial(view_predictor.predict_step, graphdef=graphdef,
                                   dtype=cfg.dtype))
    frames = _frames(batch, cfg.image_size)
    inputs = {"video": jnp.asarray(frames), "frame_mask": jnp.ones(frames.shape[:2], bool)}
    args = (params, rest, inputs)
  elif case == "mil":
    from echoprime_jax.models import mil
    model = mil.GatedAttentionMIL(mil.MILConfig(), rngs=nnx.Rngs(0))
    graphdef, params = nnx.split(model, nnx.Param)
    b = _study_batch(batch)
    fn = jax.jit(lambda p, f, m: nnx.merge(graphdef, p)(f, m))
    args = (params, jnp.asarray(b["features"]), jnp.asarray(b["video_mask"]))
  else:  # mil_train
    from configs import mil as mil_config
    from echoprime_jax.inference import stage_models
    from echoprime_jax.train import optimizer
    from echoprime_jax.train import step as step_lib
    from echoprime_jax.train.stages import mil as mil_stage
    cfg = mil_config.get_config("echoprime")
    cfg.optim.warmup_steps = 0
    assert cfg.towers.embed_dim == DIM
    mcfg = stage_models.model_config("mil", cfg)
    create = lambda: stage_models.create_model("mil", mcfg, 0)  # noqa: E731
    graphdef, abstract, _ = nnx.split(nnx.eval_shape(create), nnx.Param, ...)
    tx, schedule = optimizer.make_optimizer(cfg.optim, abstract, 1000)
    state = step_lib.init_state(create, tx)
    step = step_lib.jit_train_step(graphdef, tx, schedule, **mil_stage.step_parts(cfg))
    batch_arrays = {k: jnp.asarray(v) for k, v in _study_batch(batch).items()}
    t = time.perf_counter()
    compiled = step.lower(state, batch_arrays).compile()
    compile_s = time.perf_counter() - t
    holder = {"state": state}

    def run_train():
      holder["state"], metrics = compiled(holder["state"], batch_arrays)
      return jax.block_until_ready(metrics["loss"])

    times = timed(run_train, warmup, iters)
    return {"times": times, "compile_s": compile_s, "check": float(run_train())}

  t = time.perf_counter()
  compiled = fn.lower(*args).compile()
  compile_s = time.perf_counter() - t

  def run():
    return jax.block_until_ready(compiled(*args))

  times = timed(run, warmup, iters)
  out = run()
  out = out[0] if isinstance(out, tuple) else out
  return {"times": times, "compile_s": compile_s, "check": float(jnp.abs(out).mean())}


# ------------------------------------------------------------------------------ PyTorch


def _torch_mil():
  import torch

  class GatedAttentionMIL(torch.nn.Module):
    def __init__(self):
      super().__init__()
      self.attn_v = torch.nn.Linear(DIM + VIEWS, HIDDEN)
      self.attn_u = torch.nn.Linear(DIM + VIEWS, HIDDEN)
      self.attn_w = torch.nn.Linear(HIDDEN, SECTIONS)
      self.proj = torch.nn.Linear(DIM, DIM)
      self.log_scale = torch.nn.Parameter(torch.tensor(float(np.log(1 / 0.07))))

    def forward(self, features, mask):
      gated = torch.tanh(self.attn_v(features)) * torch.sigmoid(self.attn_u(features))
      scores = self.attn_w(gated).transpose(1, 2)  # (B, S, V)
      scores = scores.masked_fill(~mask[:, None, :], float("-inf"))
      weights = torch.softmax(scores, dim=-1).nan_to_num(0.0)
      pooled = torch.einsum("bsv,bvd->bsd", weights, features[..., :DIM])
      return self.proj(pooled), weights

  return GatedAttentionMIL()


def _torch_section_loss(pooled, targets, text, log_scale, valid):
  import torch
  present = (text >= 0) & valid[:, None]
  total, count = pooled.new_zeros(()), 0
  v = torch.nn.functional.normalize(pooled, dim=-1)
  t = torch.nn.functional.normalize(targets, dim=-1)
  n = len(v)
  eye = torch.eye(n, dtype=torch.bool)
  for s in range(pooled.shape[1]):
    ok = present[:, s]
    logits = log_scale.exp() * v[:, s] @ t[:, s].T
    same = text[:, s, None] == text[None, :, s]
    logits = logits.masked_fill((same & ~eye) | ~(ok[:, None] & ok[None, :]) & ~eye, -1e9)
    diag = logits.diagonal()
    per = 0.5 * ((logits.logsumexp(1) - diag) + (logits.logsumexp(0) - diag))
    total = total + (per * ok).sum()
    count += int(ok.sum())
  return total / max(count, 1)


def worker_torch(case: str, batch: int, warmup: int, iters: int) -> dict:
  import torch
  torch.set_num_threads(os.cpu_count() or 1)
  torch.manual_seed(0)
  if case.startswith("views"):
    from echoprime_jax.data.normalize import MEAN, STD
    cfg = _views_config(case)
    if case == "views_base":
      from torchvision.models import convnext_base
      model = convnext_base(num_classes=VIEWS).eval()
    else:
      from echoprime_jax.models import convnext
      from tests import torch_reference
      c = convnext.convnext(cfg.arch)
      model = torch_reference.torch_convnext(c.depths, c.dims).eval()
    frames = torch.from_numpy(_frames(batch, cfg.image_size))
    mean, std = torch.tensor(MEAN), torch.tensor(STD)

    def run():
      with torch.inference_mode():
        x = ((frames[:, 0].float() - mean) / std).permute(0, 3, 1, 2).contiguous()
        return model(x)
  else:
    model = _torch_mil()
    b = {k: torch.from_numpy(v) for k, v in _study_batch(batch).items()}
    if case == "mil":
      model.eval()

      def run():
        with torch.inference_mode():
          return model(b["features"], b["video_mask"])[0]
    else:
      opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)

      def run():
        opt.zero_grad(set_to_none=True)
        pooled, _ = model(b["features"], b["video_mask"])
        loss = _torch_section_loss(pooled, b["targets"], b["target_text"].long(),
                                   model.log_scale, b["valid"])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        return loss

  times = timed(run, warmup, iters)
  out = run()
  return {"times": times, "check": float(out.abs().mean()),
          "threads": torch.get_num_threads()}


# ------------------------------------------------------------------------------- parent


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--cases", default=",".join(CASES),
                 help=f"comma-separated subset of {','.join(CASES)} (default: all)")
  p.add_argument("--views-batch", type=int, default=8, help="frames per call (default 8)")
  p.add_argument("--mil-batch", type=int, default=256, help="studies per call (default 256)")
  p.add_argument("--iters", type=int, default=5, help="timed calls per worker (default 5)")
  p.add_argument("--warmup", type=int, default=2, help="untimed calls first (default 2)")
  p.add_argument("--xla-flags", default=" ".join(xla_flags.CPU_FLAGS),
                 help="XLA_FLAGS for the JAX workers (default: the trainer's, "
                      "echoprime_jax/runtime/xla_flags.py)")
  p.add_argument("--no-write", action="store_true", help="do not update benchmarks/RESULTS.md")
  p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
  p.add_argument("--framework", help=argparse.SUPPRESS)
  p.add_argument("--case", help=argparse.SUPPRESS)
  p.add_argument("--batch", type=int, help=argparse.SUPPRESS)
  args = p.parse_args()
  if args.worker:
    fn = worker_jax if args.framework == "jax" else worker_torch
    report(fn(args.case, args.batch, args.warmup, args.iters))
    return

  rows = []
  for case in args.cases.split(","):
    batch = args.views_batch if case.startswith("views") else args.mil_batch
    r = {}
    for fw in ("torch", "jax"):
      env = {"XLA_FLAGS": args.xla_flags} if fw == "jax" else None
      r[fw] = spawn(__file__, ["--framework", fw, "--case", case, "--batch", str(batch),
                               "--iters", str(args.iters), "--warmup", str(args.warmup)], env)
      print(f"{case} {fw}: median {statistics.median(r[fw]['times']) * 1e3:.1f} ms/call",
            flush=True)
    t = {fw: statistics.median(r[fw]["times"]) for fw in r}
    rows.append({"case": case, "batch": batch, "torch_s": t["torch"], "jax_s": t["jax"],
                 "compile_s": r["jax"]["compile_s"],
                 "unit": "videos" if case.startswith("views") else "studies"})

  lines = [
      f"### Views and MIL throughput: JAX vs PyTorch ({datetime.date.today().isoformat()}, "
      f"{cpu_name()}, {os.cpu_count()} cores)",
      "",
      f"fp32, evaluation mode except `mil_train`; {args.warmup} warm-up calls, median of "
      f"{args.iters}; XLA_FLAGS `{args.xla_flags or '(none)'}`; torch with all cores.",
      "",
      "| case | batch | PyTorch ms | JAX ms | PyTorch /s | JAX /s | JAX/PyTorch time | "
      "JAX compile s |",
      "|---|---|---|---|---|---|---|---|",
  ]
  for x in rows:
    lines.append(f"| {x['case']} | {x['batch']} {x['unit']} | {x['torch_s'] * 1e3:.1f} | "
                 f"{x['jax_s'] * 1e3:.1f} | {x['batch'] / x['torch_s']:.1f} | "
                 f"{x['batch'] / x['jax_s']:.1f} | **{x['jax_s'] / x['torch_s']:.2f}** | "
                 f"{x['compile_s']:.1f} |")
  lines += ["", "Reproduce: `python benchmarks/views_mil.py`."]
  publish("views_mil", lines, write=not args.no_write)


if __name__ == "__main__":
  main()
