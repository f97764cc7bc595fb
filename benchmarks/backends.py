"""JAX vs PyTorch on this machine's CPU: same weights, same inputs, measured in one run.

  python benchmarks/backends.py                  # full table, writes benchmarks/RESULTS.md
  python benchmarks/backends.py --rounds 1 --no-write

Cases: steady-state forward of MViT-S (1 clip 16x224x224), BERT-base (1 x 512 tokens),
ConvNeXt-base (1 image 224x224), and forward+backward of MViT-S (batch 2).

Method: the parent process makes random PyTorch weights (seeded) and saves them as
safetensors; every measurement runs in a fresh worker process (so peak RSS is per framework
and per case), torch and JAX alternating for `--rounds` rounds; a worker warms up, then times
`--iters` calls and reports the median. JAX compile time (lower + compile) is reported apart.
FLOPs come from `torch.utils.flop_counter` on the reference model (2 FLOPs per multiply-add),
the same count for both frameworks; the GEMM peak is a 4096^3 fp32 matmul measured here too.
Outputs of the two frameworks are compared, so a fast wrong answer cannot hide.
Requires torch + torchvision + transformers (the test requirements).
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks.common import cpu_name, report, spawn, timed, write_results_block  # noqa: E402


CASES = {
    "mvit_fwd": "MViT-S forward, 1 x 16x224x224",
    "bert_fwd": "BERT-base forward, 1 x 512 tokens",
    "convnext_fwd": "ConvNeXt-base forward, 1 x 224x224",
    "mvit_fwdbwd": "MViT-S forward+backward, batch 2",
}


# ------------------------------------------------------------------------ references


def _torch_model(case: str):
  import torch
  torch.manual_seed(0)
  if case.startswith("mvit"):
    from torchvision.models.video import mvit_v2_s
    model = mvit_v2_s()
    model.head[-1] = torch.nn.Linear(768, 512)  # EchoPrime's head
  elif case.startswith("bert"):
    import transformers
    model = transformers.BertModel(transformers.BertConfig(layer_norm_eps=1e-12),
                                   add_pooling_layer=False)
  else:
    from torchvision.models import convnext_base
    model = convnext_base(num_classes=11)
  return model.eval()


def _inputs(case: str) -> dict[str, np.ndarray]:
  rng = np.random.default_rng(0)
  if case == "mvit_fwd":
    return {"video": rng.standard_normal((1, 16, 224, 224, 3), dtype=np.float32)}
  if case == "mvit_fwdbwd":
    return {"video": rng.standard_normal((2, 16, 224, 224, 3), dtype=np.float32)}
  if case == "bert_fwd":
    return {"ids": rng.integers(5, 30522, (1, 512)), "mask": np.ones((1, 512), np.int64)}
  return {"images": rng.standard_normal((1, 224, 224, 3), dtype=np.float32)}


# ---------------------------------------------------------------------------- workers


def worker_torch(case: str, weights: str, iters: int, out_npy: str) -> dict:
  import torch
  from safetensors.torch import load_file
  model = _torch_model(case)
  model.load_state_dict(load_file(weights))
  x = _inputs(case)
  if case.startswith("mvit"):
    args = (torch.from_numpy(x["video"].transpose(0, 4, 1, 2, 3).copy()),)
  elif case.startswith("bert"):
    args = (torch.from_numpy(x["ids"]), torch.from_numpy(x["mask"]))
  else:
    args = (torch.from_numpy(x["images"].transpose(0, 3, 1, 2).copy()),)

  if case == "mvit_fwdbwd":
    def step():
      model.zero_grad(set_to_none=True)
      out = model(*args)
      (out ** 2).mean().backward()
      return out
  elif case.startswith("bert"):
    def step():
      with torch.no_grad():
        return model(input_ids=args[0], attention_mask=args[1]).last_hidden_state
  else:
    def step():
      with torch.no_grad():
        return model(*args)

  from torch.utils.flop_counter import FlopCounterMode
  with FlopCounterMode(display=False) as counter:
    out = step()
  np.save(out_npy, out.detach().numpy())
  times = timed(step, warmup=1, iters=iters)
  return {"times": times, "flops": counter.get_total_flops(), "threads": torch.get_num_threads()}


def worker_jax(case: str, weights: str, iters: int, out_npy: str) -> dict:
  import jax
  import jax.numpy as jnp
  from flax import nnx
  from safetensors.numpy import load_file
  from echoprime_jax.weights import bert_weights, convnext_weights, mvit_weights
  jax.config.update("jax_default_matmul_precision", "highest")
  sd = load_file(weights)
  if case.startswith("mvit"):
    model = mvit_weights.load_mvit(sd)
  elif case.startswith("bert"):
    model = bert_weights.load_bert(sd)
  else:
    model = convnext_weights.load_convnext(sd)
  model.eval()
  x = {k: jnp.asarray(v) for k, v in _inputs(case).items()}
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  args = tuple(x.values())

  if case == "mvit_fwdbwd":
    def loss(p, *a):
      out = nnx.merge(graphdef, p, rest)(*a)
      return (out ** 2).mean(), out
    fn = jax.jit(jax.value_and_grad(loss, has_aux=True))
  else:
    fn = jax.jit(lambda p, *a: nnx.merge(graphdef, p, rest)(*a))

  t = time.perf_counter()
  compiled = fn.lower(params, *args).compile()
  compile_s = time.perf_counter() - t
  result = compiled(params, *args)
  out = result[0][1] if case == "mvit_fwdbwd" else result
  np.save(out_npy, np.asarray(out))
  times = timed(lambda: jax.block_until_ready(compiled(params, *args)), warmup=1, iters=iters)
  return {"times": times, "compile_s": compile_s}


def worker_gemm(framework: str, iters: int) -> dict:
  n = 4096
  a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
  if framework == "torch":
    import torch
    ta = torch.from_numpy(a)
    times = timed(lambda: ta @ ta, warmup=1, iters=iters)
  else:
    import jax
    ja = jax.numpy.asarray(a)
    f = jax.jit(lambda x: x @ x)
    times = timed(lambda: f(ja).block_until_ready(), warmup=1, iters=iters)
  return {"gflops": 2 * n ** 3 / statistics.median(times) / 1e9}


def run_worker(args) -> None:
  if args.case == "gemm":
    result = worker_gemm(args.framework, args.iters)
  elif args.framework == "torch":
    result = worker_torch(args.case, args.weights, args.iters, args.out_npy)
  else:
    result = worker_jax(args.case, args.weights, args.iters, args.out_npy)
  report(result)


# ----------------------------------------------------------------------------- parent


def _spawn(framework: str, case: str, iters: int, weights: str = "", out_npy: str = "",
           xla_flags: str = "") -> dict:
  env = {}
  if framework == "jax" and xla_flags:
    env["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + xla_flags).strip()
  return spawn(__file__, ["--framework", framework, "--case", case, "--iters", str(iters),
                          "--weights", weights, "--out-npy", out_npy], env)


def _save_weights(case: str, path: str) -> None:
  from safetensors.torch import save_file
  model = _torch_model(case)
  save_file({k: v.contiguous() for k, v in model.state_dict().items()}, path)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--rounds", type=int, default=2,
                      help="torch/JAX alternations per case (default 2)")
  parser.add_argument("--iters", type=int, default=5,
                      help="timed calls per worker after one warm-up (default 5; 3 for fwd+bwd)")
  parser.add_argument("--cases", default=",".join(CASES),
                      help=f"comma-separated subset of {','.join(CASES)}")
  parser.add_argument("--xla-flags", default="--xla_cpu_use_onednn=true",
                      help="XLA_FLAGS for the JAX workers (default: oneDNN matmuls on CPU, "
                      "+10%% GEMM throughput here; pass '' for XLA's defaults)")
  parser.add_argument("--no-write", action="store_true",
                      help="print the table only; do not update benchmarks/RESULTS.md")
  parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
  parser.add_argument("--framework", help=argparse.SUPPRESS)
  parser.add_argument("--case", help=argparse.SUPPRESS)
  parser.add_argument("--weights", default="", help=argparse.SUPPRESS)
  parser.add_argument("--out-npy", default="", help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.worker:
    run_worker(args)
    return

  gemm = {fw: _spawn(fw, "gemm", 3, xla_flags=args.xla_flags)["gflops"]
          for fw in ("torch", "jax")}
  peak = max(gemm.values())
  print(f"fp32 GEMM 4096^3: torch {gemm['torch']:.0f} GFLOP/s, jax {gemm['jax']:.0f} GFLOP/s")
  rows = []
  with tempfile.TemporaryDirectory() as tmp:
    for case in args.cases.split(","):
      weights = os.path.join(tmp, f"{case}.safetensors")
      _save_weights(case, weights)
      iters = 3 if case == "mvit_fwdbwd" else args.iters
      samples = {"torch": [], "jax": []}
      info = {"torch": {}, "jax": {}}
      for _ in range(args.rounds):
        for fw in ("torch", "jax"):
          r = _spawn(fw, case, iters, weights, os.path.join(tmp, f"{case}_{fw}.npy"),
                     args.xla_flags)
          samples[fw] += r["times"]
          info[fw]["peak_rss_mb"] = max(info[fw].get("peak_rss_mb", 0), r["peak_rss_mb"])
          for k in ("flops", "compile_s", "threads"):
            if k in r:
              info[fw].setdefault(k, []).append(r[k])
      ref, out = (np.load(os.path.join(tmp, f"{case}_{fw}.npy")) for fw in ("torch", "jax"))
      diff = float(np.abs(ref - out).max())
      t_torch, t_jax = (statistics.median(samples[fw]) for fw in ("torch", "jax"))
      flops = info["torch"]["flops"][0]
      row = {
          "case": case, "what": CASES[case], "gflop": flops / 1e9,
          "torch_s": t_torch, "jax_s": t_jax, "ratio": t_jax / t_torch,
          "torch_gflops": flops / t_torch / 1e9, "jax_gflops": flops / t_jax / 1e9,
          "jax_compile_s": min(info["jax"]["compile_s"]),
          "torch_rss_mb": info["torch"]["peak_rss_mb"], "jax_rss_mb": info["jax"]["peak_rss_mb"],
          "max_abs_diff": diff,
      }
      rows.append(row)
      print(f"{case:<13} torch {t_torch:.3f}s  jax {t_jax:.3f}s  jax/torch {row['ratio']:.2f}  "
            f"jax {row['jax_gflops']:.0f} GFLOP/s ({row['jax_gflops'] / peak:.0%} of GEMM peak)  "
            f"compile {row['jax_compile_s']:.1f}s  |diff| {diff:.1e}", flush=True)

  table = _markdown(rows, gemm, peak, args.xla_flags)
  print("\n" + table)
  if not args.no_write:
    write_results_block("backends", table)


def _markdown(rows, gemm, peak, xla_flags) -> str:
  cpu = cpu_name()
  lines = [
      f"### CPU: JAX vs PyTorch ({datetime.date.today().isoformat()}, {cpu}, "
      f"{os.cpu_count()} cores)",
      "",
      f"fp32 GEMM 4096^3 peak: torch {gemm['torch']:.0f} GFLOP/s, JAX {gemm['jax']:.0f} GFLOP/s. "
      f"JAX workers ran with XLA_FLAGS=`{xla_flags or '(none)'}`; torch with its defaults "
      "(all cores).",
      "Times are medians over all timed calls of all rounds; FLOPs are the reference model's "
      "(torch flop counter, 2 per multiply-add).",
      "",
      "| case | GFLOP | PyTorch s | JAX s | JAX/PyTorch | PyTorch GFLOP/s | JAX GFLOP/s "
      "| JAX % of GEMM peak | JAX compile s | PyTorch peak RSS MB | JAX peak RSS MB "
      "| max abs diff |",
      "|---|---|---|---|---|---|---|---|---|---|---|---|",
  ]
  for r in rows:
    lines.append(
        f"| {r['what']} | {r['gflop']:.1f} | {r['torch_s']:.3f} | {r['jax_s']:.3f} | "
        f"**{r['ratio']:.2f}** | {r['torch_gflops']:.0f} | {r['jax_gflops']:.0f} | "
        f"{r['jax_gflops'] / peak:.0%} | {r['jax_compile_s']:.1f} | {r['torch_rss_mb']:.0f} | "
        f"{r['jax_rss_mb']:.0f} | {r['max_abs_diff']:.1e} |")
  lines += ["", "Reproduce: `python benchmarks/backends.py` (with requirements-dev.txt installed)."]
  return "\n".join(lines)


if __name__ == "__main__":
  main()
