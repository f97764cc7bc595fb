"""Compile a stage's programs for a GPU without one: memory, FLOPs, kernels, collectives, roofline.

  python -m echoprime_jax.aot --config configs/pretrain.py:echoprime --config.dtype=bfloat16 \
      --target h200 --topology 1x1x2 --json out.json

Needs XLA's CUDA compiler in .aot-toolchain/ (`pip install --no-deps --target .aot-toolchain
-r requirements-aot.txt`); no GPU, driver or CUDA install. Every figure comes from the compiled
program; the step time is a roofline bound (an estimate), not a measurement.
"""

from __future__ import annotations

from echoprime_jax.aot import toolchain

toolchain.prepare()  # before jax starts: CPU backend only, the CUDA compiler on the path

import contextlib  # noqa: E402
import datetime  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402

from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from echoprime_jax.runtime import cli  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Stage config and variant, e.g. configs/pretrain.py:echoprime; override "
    "fields as in training (--config.batch_size=64 --config.dtype=bfloat16 --config.mesh.fsdp=8)")
flags.mark_flag_as_required("config")
_TARGET = flags.DEFINE_enum("target", "h200", ["h200", "h100"],
                            "GPU to compile for (targets.py: memory, bandwidth, peak FLOP/s)")
_TOPOLOGY = flags.DEFINE_string(
    "topology", "1x1x2", "PARTITIONSxHOSTSxDEVICES_PER_HOST: 1x1x2 = two GPUs on one host, "
    "1x2x8 = two hosts of eight; the config's mesh is laid over these devices")
_JSON = flags.DEFINE_string("json", "", "Also write every figure to this JSON file")
_PROGRAMS = flags.DEFINE_list("programs", [], "Compile only these programs (default: all of "
                              "the stage's, e.g. train_step,eval_embed)")


def compile_stage(cfg, target_key: str, topology: str, only: list[str]) -> dict:
  import jax
  from jax.experimental import topologies

  from echoprime_jax import parallel
  from echoprime_jax.aot import programs, report, targets

  version = toolchain.plugin_version()
  programs.builder(cfg)  # a config of no stage is refused before anything is built
  target = targets.TARGETS[target_key]
  partitions, hosts, per_host = targets.parse_topology(topology)
  topo = topologies.get_topology_desc(platform="cuda", target_config=target.config_text(),
                                      topology=topology)
  mesh = parallel.make_mesh(dict(cfg.mesh), devices=list(topo.devices))
  built = programs.stage_programs(cfg, mesh)
  unknown = set(only) - {p.name for p in built}
  if unknown:
    raise ValueError(f"--programs names {sorted(unknown)}; this stage has "
                     f"{[p.name for p in built]}")
  results = []
  for program in built:
    if only and program.name not in only:
      continue
    with jax.set_mesh(mesh) if program.on_mesh else contextlib.nullcontext():
      result = report.analyse(program, target)  # traced as the trainer traces it
    print("\n".join(report.lines(result)), flush=True)
    results.append(result)
  return {"target": target_key, "device": target.name, "topology": topology,
          "devices": partitions * hosts * per_host, "mesh": dict(mesh.shape),
          "stage": cfg.stage, "variant": cfg.get("variant", ""), "dtype": cfg.get("dtype", ""),
          "jax": jax.__version__, "cuda_plugin": version,
          "xla_flags": os.environ.get("XLA_FLAGS", ""),  # the GPU compiler's options too
          "date": datetime.date.today().isoformat(),
          "note": "compiled, not run: memory, FLOPs, kernels and collectives are the compiled "
                  "program's; step times are roofline bounds (estimates)",
          "programs": results}


def main(argv) -> int:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  cfg = _CONFIG.value
  def call():
    out = compile_stage(cfg, _TARGET.value, _TOPOLOGY.value, _PROGRAMS.value)
    if _JSON.value:
      with open(_JSON.value + ".tmp", "w") as f:  # a reader never sees half a file
        json.dump(out, f, indent=1)
      os.replace(_JSON.value + ".tmp", _JSON.value)
      print(f"wrote {os.path.abspath(_JSON.value)}")
  return cli.run(call)


if __name__ == "__main__":
  app.run(main, flags_parser=cli.absl_flags_parser("config"))
