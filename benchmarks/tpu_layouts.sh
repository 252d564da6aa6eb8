#!/usr/bin/env bash
# SiT-XL/2 + SARA's training step under each train.state_sharding, compiled ahead of time by
# XLA's TPU compiler for Cloud TPU slices that are not here (docs/pods.md, "Which layout"):
#   bash benchmarks/tpu_layouts.sh [PYTHON] [OUT_DIR]
# PYTHON: an interpreter with libtpu (`pip install "jax[tpu]"`, docs/performance.md's side
# environment; default python); OUT_DIR: default benchmarks/results. Per slice, at the paper's
# global batch of 256, one JSON with the three layouts: memory per chip, XLA's FLOPs against the
# analytic count, bytes moved by collectives, compile time. Then on a v5e-8 the batches that
# bracket the largest each layout fits without recomputation. About an hour on 2 CPU cores.
# SLICES="v6e_8:v6e:2x4" compiles that slice only; an empty SLICES only the v5e-8 batches.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${1:-python}
out=${2:-benchmarks/results}
mkdir -p "$out"

compile() { # NAME TOPOLOGY BATCH LAYOUTS
  "$python" benchmarks/train_step.py --config=configs/sit_xl.py --mode=sara \
    "--target=tpu:$2" "--batch=$3" "--state_sharding=$4" "--out=$out/$1.json" 2>&1 |
    grep -v -e "^E0000" -e "WARNING" -e "^=== Source" -e "libtpu_init_utils" -e "host bounds"
}

slices=${SLICES-v5e_8:v5e:2x4 v5e_16:v5e:4x4 v6e_8:v6e:2x4 v5p_8:v5p:2x2x1}
for slice in $slices; do
  name=${slice%%:*}
  compile "tpu_${name}_layouts_sit_xl" "${slice#*:}" 256 all
done
# v5e-8 (16 GiB per chip): the batches that bracket the largest each layout runs without
# recomputation, from its figure at 256 (replicated recomputes there; the others do not) ...
for run in replicated:64 replicated:128 replicated:192 weight_update:320 fsdp:320 fsdp:384; do
  layout=${run%%:*} batch=${run#*:}
  compile "tpu_v5e_8_${layout}_b${batch}_sit_xl" v5e:2x4 "$batch" "$layout"
done
# ... and the same programs on 8 chips of 95 GiB (a v5p-16), which recompute nothing: XLA's
# FLOPs over the analytic count there is each batch's own no-recomputation figure.
for run in replicated:64 replicated:128 weight_update:320; do
  layout=${run%%:*} batch=${run#*:}
  compile "tpu_v5p_16_${layout}_b${batch}_sit_xl" v5p:2x2x2 "$batch" "$layout"
done
