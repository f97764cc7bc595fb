"""Devices, meshes and shardings: multi-host start-up, the mesh, parameter and batch layouts.

Mesh axes (from the config, e.g. `{"data": -1, "fsdp": 1}`; -1 takes the remaining devices):
  data  batch split, parameters replicated across it
  fsdp  batch split too, and parameters (with their optimizer state) sharded along it
The batch is sharded over ("data", "fsdp") together, so every device holds a different slice.
Parameter rule: with fsdp > 1, a parameter of at least `min_fsdp_size` elements is split along
its largest dimension divisible by the fsdp size; everything else is replicated.
"""

from __future__ import annotations

import logging
import math
import os
from typing import Any, Mapping

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

log = logging.getLogger(__name__)

BATCH_AXES = ("data", "fsdp")


def initialize_distributed(coordinator: str | None = None, num_processes: int | None = None,
                           process_id: int | None = None, cpu_collectives: bool = False) -> None:
  """`jax.distributed.initialize` from explicit values, or auto-detected (SLURM, Open MPI, TPU,
  or the JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID environment variables).

  A single process with nothing configured is left alone. cpu_collectives: use gloo for
  cross-process collectives between CPU devices (localhost tests, CPU clusters).
  """
  coordinator = coordinator or os.environ.get("JAX_COORDINATOR_ADDRESS")
  if num_processes is None and "JAX_NUM_PROCESSES" in os.environ:
    num_processes = int(os.environ["JAX_NUM_PROCESSES"])
  if process_id is None and "JAX_PROCESS_ID" in os.environ:
    process_id = int(os.environ["JAX_PROCESS_ID"])
  in_cluster = any(k in os.environ for k in ("SLURM_JOB_ID", "OMPI_COMM_WORLD_SIZE"))
  if coordinator is None and not in_cluster:
    return
  if cpu_collectives:
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes,
                             process_id=process_id)
  log.info("process %d of %d, %d local / %d global devices", jax.process_index(),
           jax.process_count(), jax.local_device_count(), jax.device_count())


def make_mesh(axes: Mapping[str, int], devices: list | None = None) -> Mesh:
  """Mesh over all devices (of all processes) with the named axis sizes; one -1 fills up."""
  devices = jax.devices() if devices is None else devices
  names = list(axes)
  sizes = [int(axes[a]) for a in names]
  if sizes.count(-1) > 1:
    raise ValueError(f"at most one mesh axis may be -1: {dict(axes)}")
  known = math.prod(s for s in sizes if s != -1)
  if -1 in sizes:
    if len(devices) % known:
      raise ValueError(f"{len(devices)} devices do not divide into mesh {dict(axes)}")
    sizes[sizes.index(-1)] = len(devices) // known
  if math.prod(sizes) != len(devices):
    raise ValueError(f"mesh {dict(zip(names, sizes))} needs {math.prod(sizes)} devices, "
                     f"have {len(devices)}")
  return Mesh(np.asarray(devices).reshape(sizes), tuple(names))


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) dimension split over every batch axis present in the mesh."""
  axes = tuple(a for a in BATCH_AXES if a in mesh.axis_names)
  return NamedSharding(mesh, P(axes))


def batch_axes(mesh: Mesh) -> tuple[str, ...]:
  return tuple(a for a in BATCH_AXES if a in mesh.axis_names)


def constrain_batch(x: jax.Array) -> jax.Array:
  """x split along its leading (batch) dim over the batch axes of the mesh being traced under
  (`jax.set_mesh`); unchanged without one. For kernels with a fixed partitioning rule (cuDNN
  attention): under FSDP, XLA may otherwise propagate a parameter's feature sharding onto
  their operands, a layout the kernel's partitioner cannot take."""
  mesh = jax.sharding.get_abstract_mesh()
  axes = () if mesh.empty else tuple(a for a in BATCH_AXES if a in mesh.axis_names)
  if not axes:
    return x
  return jax.lax.with_sharding_constraint(x, P(axes))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def param_spec(shape: tuple[int, ...], fsdp: int, min_fsdp_size: int = 2 ** 14) -> P:
  """The PartitionSpec of one parameter under the rule in the module docstring."""
  if fsdp <= 1 or math.prod(shape) < min_fsdp_size:
    return P()
  for dim in sorted(range(len(shape)), key=lambda d: -shape[d]):
    if shape[dim] % fsdp == 0:
      spec = [None] * len(shape)
      spec[dim] = "fsdp"
      return P(*spec)
  return P()


def tree_shardings(tree: Any, mesh: Mesh, min_fsdp_size: int = 2 ** 14) -> Any:
  """NamedShardings for a pytree of arrays / ShapeDtypeStructs (parameters, optimizer state)."""
  fsdp = mesh.shape["fsdp"] if "fsdp" in mesh.axis_names else 1
  return jax.tree.map(
      lambda x: NamedSharding(mesh, param_spec(tuple(x.shape), fsdp, min_fsdp_size)), tree)
