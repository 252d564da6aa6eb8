#!/usr/bin/env bash
# Train on every GPU of one machine: bash launch/gpu.sh configs/sit_xl.py /path/to/workdir [--config.x=y ...]
# The step is data parallel over all local devices (jax.shard_map on a `data` mesh axis).
set -euo pipefail
config=${1:?usage: launch/gpu.sh CONFIG WORKDIR [overrides...]}
workdir=${2:?usage: launch/gpu.sh CONFIG WORKDIR [overrides...]}
shift 2
# Let XLA take most of the GPU memory up front, as JAX recommends for training.
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.9}
exec python -m sara_jax.main --config="$config" --workdir="$workdir" "$@"
