#!/usr/bin/env bash
# One host, all its devices (CPU cores as one device, or every local GPU).
#   launch/single_host.sh configs/pretrain.py:tiny runs/tiny --config.data.dir=shards64
set -euo pipefail
config=${1:?config, e.g. configs/pretrain.py:tiny}; workdir=${2:?workdir}; shift 2
cd "$(dirname "$0")/.."
exec python -m echoprime_jax.train --config "$config" --workdir "$workdir" "$@"
