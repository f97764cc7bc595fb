#!/usr/bin/env bash
# N processes on this machine, each with its own CPU device(s), talking through gloo: the
# multi-host code path without a cluster.
#   launch/localhost_multiprocess.sh 2 configs/pretrain.py:tiny runs/mp --config.data.dir=shards64
set -euo pipefail
n=${1:?number of processes}; config=${2:?config}; workdir=${3:?workdir}; shift 3
cd "$(dirname "$0")/.."
port=${PORT:-$((20000 + RANDOM % 20000))}
pids=()
for ((i = 0; i < n; i++)); do
  XLA_FLAGS="${XLA_FLAGS:-} --xla_force_host_platform_device_count=${DEVICES_PER_PROCESS:-1}" \
    python -m echoprime_jax.train --config "$config" --workdir "$workdir" \
    --coordinator "localhost:$port" --num_processes "$n" --process_id "$i" --cpu_collectives \
    "$@" > "${workdir%/}.process$i.log" 2>&1 &
  pids+=($!)
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=$?; done
exit $status
