#!/usr/bin/env bash
# Every GPU figure of docs/performance.md from one call, for a GPU lent for minutes: the training
# step of SiT-B/2, L/2 and XL/2 at the paper's batch in the three modes (plain SiT, REPA, SARA),
# the XL step's profile, and the 250-step SDE's sampling speed with and without guidance.
#
#   bash benchmarks/device_suite.sh                        # on the GPU (docs/performance.md)
#   bash benchmarks/device_suite.sh --smoke --out DIR      # the same sequence on CPU, tiny configs
#
# Each step runs in its own time box, cut to what is left of one budget (--budget, 460 s), so the
# suite ends within 8 minutes; a step that fails or runs out of time is recorded and the next one
# runs. The steps, most needed first (a rerun takes --only with the ones that did not finish):
#   sit_xl                  XL/2, batch 256 as written (fits 141 GB), --mode=all
#   sample_xl_sde           XL/2, 250-step Euler-Maruyama SDE, no guidance
#   sample_xl_sde_cfg       the same with w = 1.35 at every step (configs/sit_xl.py)
#   sit_xl_profile          XL/2 + SARA with --profile_dir: where the step's time goes
#   sit_b, sit_l            B/2 and L/2, batch 256, --mode=all
#   sit_xl_accum2           XL/2 with train.grad_accum_steps=2 (what fits an 80 GB card)
#   sample_xl_sde_interval  REPA's recipe: w = 1.8 on t in [0, 0.7]
#   sit_xl_layouts          XL/2 + SARA (accumulating 2), train.state_sharding replicated and
#                           weight_update alternated: on one GPU nothing splits, so this checks
#                           that the sharded step's code costs nothing there (docs/pods.md)
#
# Options:
#   --smoke             tiny demo configs on CPU, what CI runs (tests/e2e/test_device_suite.py)
#   --out DIR           where the files go; default $OUT (the device tool's folder), else
#                       benchmarks/results
#   --only A,B          these steps only
#   --budget S          seconds for the whole suite (default 460)
#   --box STEP=S        STEP's own time box, seconds
#   --extra STEP=FLAG   one more flag for STEP's command (repeatable), e.g.
#                       --extra sit_xl_accum2=--config.train.grad_accum_steps=4
#   --prefix P          the files' prefix; default the device (h200, h100, ...), smoke with --smoke
#
# Files, PREFIX_ before each name: STEP.json (the benchmark's JSON, benchmarks/results' naming),
# suite.json (device, versions, each step's status, seconds, command and JSON), suite.txt (the
# summary printed at the end), suite.log (each step's output), sit_xl_profile.perfetto_trace.json.gz
# (the profile's trace, opens in ui.perfetto.dev, when under 15 MiB). Into $OUT, of which only
# 8 files come back, the STEP.json files go packed as results.tar.gz. All are rewritten after
# each step, so a suite stopped from outside keeps what it measured.
# Packages missing here are installed from the wheels in .whl/ (benchmarks/device_wheels.sh).
# The device record and the summary are written by benchmarks/device_suite_report.py.
set -euo pipefail

usage="usage: bash benchmarks/device_suite.sh [--smoke] [--out DIR] [--only A,B] [--budget S]
  [--box STEP=S] [--extra STEP=FLAG] [--prefix P]"
all_steps=(sit_xl sample_xl_sde sample_xl_sde_cfg sit_xl_profile sit_b sit_l sit_xl_accum2
  sample_xl_sde_interval sit_xl_layouts)
declare -A box=(
  [sit_xl]=200 [sample_xl_sde]=90 [sample_xl_sde_cfg]=120 [sit_xl_profile]=120
  [sit_b]=120 [sit_l]=150 [sit_xl_accum2]=200 [sample_xl_sde_interval]=120 [sit_xl_layouts]=150
)
declare -A extra=()
smoke=false
out_dir=""
only=""
budget=460
prefix=""
min_box=30 # No step starts with less time than this left.

while (($#)); do
  case $1 in
  --smoke) smoke=true ;;
  --out | --only | --budget | --box | --extra | --prefix)
    [[ $# -ge 2 ]] || {
      echo "$1 needs a value; $usage" >&2
      exit 2
    }
    case $1 in
    --out) out_dir=$2 ;;
    --only) only=$2 ;;
    --budget) budget=$2 ;;
    --prefix) prefix=$2 ;;
    --box | --extra)
      name=${2%%=*}
      [[ -v "box[$name]" && $2 == *=* ]] || {
        echo "$1 $2: expected STEP=VALUE, STEP one of: ${all_steps[*]}" >&2
        exit 2
      }
      if [[ $1 == --box ]]; then box[$name]=${2#*=}; else extra[$name]+=" ${2#*=}"; fi
      ;;
    esac
    shift
    ;;
  -h | --help)
    echo "$usage"
    exit 0
    ;;
  *)
    echo "unknown argument $1; $usage" >&2
    exit 2
    ;;
  esac
  shift
done

[[ $budget =~ ^[0-9]+$ ]] || {
  echo "--budget $budget: expected whole seconds" >&2
  exit 2
}
for name in "${!box[@]}"; do
  [[ ${box[$name]} =~ ^[0-9]+$ ]] || {
    echo "--box $name=${box[$name]}: expected whole seconds" >&2
    exit 2
  }
done
steps=("${all_steps[@]}")
if [[ -n $only ]]; then
  IFS=, read -ra steps <<<"$only"
  for name in "${steps[@]}"; do
    [[ -v "box[$name]" ]] || {
      echo "--only: unknown step $name; the steps: ${all_steps[*]}" >&2
      exit 2
    }
  done
fi

cd "$(dirname "$0")/.."
root=$PWD
python=${PYTHON:-python3}
pack=false # Into $OUT the step JSONs go as one archive: only 8 files come back from there.
if [[ -z $out_dir ]]; then
  if [[ -n ${OUT:-} ]]; then
    out_dir=$OUT
    pack=true
  else
    out_dir=benchmarks/results
  fi
fi
mkdir -p "$out_dir"
out_dir=$(cd "$out_dir" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/json"
deadline=$((SECONDS + budget))
# Wheels go to /tmp/site; the tree itself (sara_jax, configs) is imported from here.
export PYTHONPATH="/tmp/site:$root${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1

# --- The configs of each step: the paper's on the device, the demo's shrunk on CPU. ------------
if $smoke; then
  export JAX_PLATFORMS=cpu
  # Nothing in a smoke run is timed for its value: XLA's cheaper CPU optimisation compiles faster.
  fast_compile="--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
  export XLA_FLAGS="${XLA_FLAGS:+$XLA_FLAGS }$fast_compile"
  # The smoke steps share programs (one tiny config): compiled once, loaded from the cache after.
  export JAX_COMPILATION_CACHE_DIR=$work/jax_cache JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=0
  tiny=(--config=configs/demo.py --config.model.depth=1 --config.model.hidden_size=32
    --config.model.num_heads=2 --config.model.encoder_depth=1 --config.projector.width=32
    --config.encoder.arch.embed_dim=16 --config.encoder.arch.depth=1
    --config.encoder.arch.num_heads=2 --config.disc.every=2)
  config_b=("${tiny[@]}") config_l=("${tiny[@]}") config_xl=("${tiny[@]}")
  train=(--mode=all --batch=8 --steps=2 --warmup=1)
  profile=(--mode=sara --batch=8 --steps=2 --warmup=1)
  layouts=(--mode=sara --batch=8 --steps=1 --warmup=1 --rounds=1)
  sample=(--batch=8 --num_steps=4 --repeats=1)
  prefix=${prefix:-smoke}
else
  # JAX takes 75% of the card by default; XL/2 at batch 256 as written needs about 108 GiB.
  export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.95}
  config_b=(--config=configs/sit_b.py) config_l=(--config=configs/sit_l.py)
  config_xl=(--config=configs/sit_xl.py)
  # 10 timed steps = 2 of D's updates (disc.every = 5); compiling is most of each step's time.
  train=(--mode=all --steps=10 --warmup=2)
  profile=(--mode=sara --steps=5 --warmup=1)
  layouts=(--mode=sara --steps=5 --warmup=1 --rounds=2 --config.train.grad_accum_steps=2)
  # One warm-up and one timed batch of 64 (with guidance 128 rows per SiT call): a batch of
  # 256 would take about 30 s per pass at 50% MFU without guidance.
  sample=(--batch=64 --num_steps=250 --repeats=1)
fi
sample+=(--config.sample.method=sde)

step_command() { # Sets `cmd` to step $1's python arguments.
  case $1 in
  sit_b) cmd=(-m benchmarks.train_step "${config_b[@]}" "${train[@]}") ;;
  sit_l) cmd=(-m benchmarks.train_step "${config_l[@]}" "${train[@]}") ;;
  sit_xl) cmd=(-m benchmarks.train_step "${config_xl[@]}" "${train[@]}") ;;
  sit_xl_accum2)
    cmd=(-m benchmarks.train_step "${config_xl[@]}" "${train[@]}"
      --config.train.grad_accum_steps=2)
    ;;
  sit_xl_layouts)
    cmd=(-m benchmarks.train_step "${config_xl[@]}" "${layouts[@]}"
      "--state_sharding=replicated,weight_update")
    ;;
  sit_xl_profile)
    cmd=(-m benchmarks.train_step "${config_xl[@]}" "${profile[@]}"
      "--profile_dir=$work/profile")
    ;;
  sample_xl_sde)
    cmd=(-m benchmarks.sample_throughput "${config_xl[@]}" "${sample[@]}"
      --config.sample.cfg_scale=1.0)
    ;;
  sample_xl_sde_cfg)
    cmd=(-m benchmarks.sample_throughput "${config_xl[@]}" "${sample[@]}"
      --config.sample.cfg_scale=1.35)
    ;;
  sample_xl_sde_interval)
    cmd=(-m benchmarks.sample_throughput "${config_xl[@]}" "${sample[@]}"
      --config.sample.cfg_scale=1.8 --config.sample.guidance_high=0.7)
    ;;
  esac
  if [[ -n ${extra[$1]:-} ]]; then
    local more
    read -ra more <<<"${extra[$1]}"
    cmd+=("${more[@]}")
  fi
}

# --- Wheels: installed only when a package they hold is missing. -------------------------------
wheels_note="no .whl folder"
if compgen -G ".whl/*.whl" >/dev/null; then
  missing=$("$python" -m benchmarks.device_suite_report missing .whl/*.whl)
  if [[ -z $missing ]]; then
    wheels_note="not needed: their packages are installed"
  elif "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl; then
    wheels_note="installed from .whl/ into /tmp/site for: $missing"
  else
    wheels_note="FAILED to install .whl/ (missing: $missing)"
  fi
fi
echo "wheels: $wheels_note"

# --- The device. ---------------------------------------------------------------------------------
if command -v nvidia-smi >/dev/null; then
  { nvidia-smi -L && nvidia-smi --format=csv \
    --query-gpu=name,memory.total,driver_version,clocks.max.sm,power.limit; } \
    >"$work/nvidia_smi.txt" 2>&1 || true
  cat "$work/nvidia_smi.txt"
fi
info_status=0
no_run="" # Why no step can run, if none can.
timeout --kill-after=10 90 "$python" -m benchmarks.device_suite_report device \
  "$work/info.json" "${prefix:-}" >"$work/info.out" 2>&1 || info_status=$?
cat "$work/info.out"
if ((info_status != 0)); then
  no_run="JAX did not start (exit $info_status)"
  echo "$no_run: no step can run." >&2
  prefix=${prefix:-gpu}
fi
if [[ -f $work/info.json ]]; then
  prefix=$("$python" -c 'import json, sys; print(json.load(open(sys.argv[1]))["prefix"])' \
    "$work/info.json")
  platform=$("$python" -c 'import json, sys; print(json.load(open(sys.argv[1]))["platform"])' \
    "$work/info.json")
  if ! $smoke && [[ $platform == cpu ]]; then
    no_run="JAX sees no accelerator"
    echo "$no_run (platform cpu): the paper configs would take hours on the CPU, so no step" \
      "runs. --smoke is the CPU run." >&2
  fi
fi
log=$out_dir/${prefix}_suite.log
{
  echo "wheels: $wheels_note"
  cat "$work/nvidia_smi.txt" 2>/dev/null || true
  cat "$work/info.out"
  [[ -z $no_run ]] || echo "$no_run: no step runs."
} >"$log"
: >"$work/status.tsv"

# --- After each step: JSONs to the out dir, the summary and suite.json rewritten. ---------------
publish() {
  mkdir -p "$work/named"
  for file in "$work"/json/*.json; do
    [[ -e $file ]] && cp "$file" "$work/named/${prefix}_$(basename "$file")"
  done
  if ! compgen -G "$work/named/*.json" >/dev/null; then
    :
  elif $pack; then
    (cd "$work/named" && tar -czf "$work/results.tar.gz" ./*.json)
    mv "$work/results.tar.gz" "$out_dir/${prefix}_results.tar.gz"
  else
    cp "$work"/named/*.json "$out_dir/"
  fi
  "$python" -m benchmarks.device_suite_report summary "$work" "$out_dir" "$prefix" "$budget" \
    "$SECONDS" "$smoke" "$wheels_note" >"$work/summary.txt"
}

# --- One step: its command under its time box; its status recorded whatever happens. ----------
run_step() {
  local name=$1 limit=${box[$1]} left=$((deadline - SECONDS)) rc=0 start status shown
  ((limit <= left)) || limit=$left
  step_command "$name"
  printf -v shown '%q ' "$python" "${cmd[@]}" "--out=${prefix}_$name.json"
  shown=${shown% }
  cmd+=("--out=$work/json/$name.json")
  if [[ -n $no_run ]]; then
    status="not run: $no_run"
    limit=0
  elif ((left < min_box)); then
    status="skipped: ${left} s left"
    limit=0
  fi
  if ((limit == 0)); then
    echo "== $name: $status"
    printf '%s\t%s\t\t0\t0\t%s\n' "$name" "$status" "$shown" >>"$work/status.tsv"
    return
  fi
  echo
  echo "== $name (time box ${limit} s): $shown"
  start=$SECONDS
  timeout --kill-after=10 "$limit" "$python" "${cmd[@]}" \
    >"$work/$name.out" 2>"$work/$name.err" || rc=$?
  local seconds=$((SECONDS - start))
  local partial=""
  [[ -f $work/json/$name.json ]] && partial=", JSON kept"
  case $rc in
  0) status=ok ;;
  124 | 137) status="TIMEOUT at ${limit} s$partial" ;;
  *) status="FAILED (exit $rc)$partial" ;;
  esac
  if [[ $rc == 0 && ! -f $work/json/$name.json ]]; then status="FAILED: no JSON written"; fi
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$status" "$rc" "$seconds" "$limit" "$shown" \
    >>"$work/status.tsv"
  grep -v '^[IW][0-9]\{4\} ' "$work/$name.out" || true
  [[ $rc == 0 ]] || tail -n 15 "$work/$name.err"
  echo "-- $name: $status, ${seconds} s"
  {
    echo
    echo "== $name: $status, ${seconds} s of a ${limit} s box"
    echo "$shown"
    cat "$work/$name.out"
    echo "-- stderr (last 400 lines)"
    tail -n 400 "$work/$name.err"
  } >>"$log"
  if [[ $name == sit_xl_profile ]]; then
    local trace
    trace=$(find "$work/profile" -name '*perfetto_trace.json.gz' 2>/dev/null | sort | tail -n 1)
    if [[ -n $trace ]] && (($(stat -c %s "$trace") <= 15 * 1024 * 1024)); then
      cp "$trace" "$out_dir/${prefix}_sit_xl_profile.perfetto_trace.json.gz"
    elif [[ -n $trace ]]; then
      echo "profile trace $(stat -c %s "$trace") bytes: over 15 MiB, not kept" | tee -a "$log"
    fi
  fi
}

for name in "${steps[@]}"; do
  run_step "$name"
  publish >/dev/null || echo "(the summary failed: see the errors above)" >&2
done
echo
cat "$work/summary.txt" 2>/dev/null || true
# Exit status: 0 when every step ran and wrote its JSON.
! cut -f2 "$work/status.tsv" | grep -qv '^ok$'
