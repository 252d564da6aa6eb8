"""Training-step speed of a config: images/s, step time, MFU, memory and compile time.

    python benchmarks/train_step.py --config=configs/sit_xl.py --steps=20 --out=xl.json
    python benchmarks/train_step.py --config=configs/sit_b.py --mode=sara --batch=128 \\
        --config.model.remat=True --config.train.grad_accum_steps=2
    python benchmarks/train_step.py --config=configs/demo.py --steps=2 --warmup=1   # CPU smoke
    python benchmarks/train_step.py --config=configs/sit_xl.py --target=h100_sxm   # no GPU here

Runs `sara_jax.training.step.make_train_step`, the step training runs, on the config's real
architectures with random weights (no downloads: the encoder and D are randomly initialised,
which costs the same time) and one synthetic device-resident batch, so data loading is left
out (benchmarks/data_throughput.py measures it). `--mode=all` runs a plain SiT, REPA and SARA
on the same config and reports each one's overhead over the previous.

Per mode: compile time (tracing, then XLA), the mean step time over `--steps` steps after
`--warmup` (each step waited for with block_until_ready; time a multiple of `disc.every` steps
so D's update is averaged in), images/s, the analytic FLOPs per image by component
(sara_jax.training.flops), MFU against the device's dense bf16 peak, and memory: XLA's buffer
assignment of the compiled step (arguments + outputs + temporaries - donated) and, where the
backend reports it, the allocator's peak (cumulative over the modes of one run: they go from
the smallest to the largest). Memory options are config fields: `model.remat` and
`train.grad_accum_steps`.

`--target=NAME` compiles the step ahead of time for devices this machine does not have: a GPU
(benchmarks/targets/NAME.textproto, XLA's description of it) or a Cloud TPU slice
(`tpu:v5e:2x2`), and reports the compile time and those devices' buffer assignment, nothing
timed: whether a batch fits, on a CPU box. It needs JAX's CUDA plugin and cuDNN, or libtpu,
installed, no accelerator (see `target_devices`). XLA's GPU compiler rematerialises on its own
to fit the device's memory; `--target_memory_gib=1024` shows what the step would take without.
"""

import copy
import gzip
import json
import math
import os
import re
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import app, flags
from jax.experimental import topologies
from jax.extend import core as jax_core
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
from ml_collections import config_flags

from sara_jax.config import set_alignment, validate
from sara_jax.encoders.load import encoder_module, features_fn
from sara_jax.io import cli
from sara_jax.io.files import write_json
from sara_jax.training import flops
from sara_jax.training.sharding import (
    AXIS,
    data_mesh,
    replicated_fraction,
    state_shardings,
)
from sara_jax.training.sharding import (
    MODES as LAYOUTS,
)
from sara_jax.training.state import TrainState, build_models, create_train_state
from sara_jax.training.step import make_train_step

# Mode -> its method (`set_alignment`): a plain SiT, REPA, SARA.
MODES = {"sit": "none", "repa": "repa", "sara": "sara"}

_CONFIG = cli.define_config()
_MODE = flags.DEFINE_enum("mode", "all", [*MODES, "all"], "Objective(s) to time.")
_BATCH = flags.DEFINE_integer("batch", None, "Global batch; default config.data.global_batch_size.")
_STEPS = flags.DEFINE_integer("steps", 10, "Steps timed per mode (0: compile only).")
_WARMUP = flags.DEFINE_integer("warmup", 2, "Steps run before timing.")
_NUM_DEVICES = flags.DEFINE_integer("num_devices", None, "Devices of the mesh; default all.")
_PEAK = flags.DEFINE_float("peak_tflops", None, "Per-device peak for MFU; default by device.")
_PROFILE_DIR = flags.DEFINE_string(
    "profile_dir", None, "Trace `disc.every` more steps per mode with jax.profiler into DIR/MODE."
)
_TARGET = flags.DEFINE_string(
    "target", None, "Compile only, for a GPU (benchmarks/targets/NAME) or tpu:TOPOLOGY."
)
_TARGET_MEMORY = flags.DEFINE_float(
    "target_memory_gib", None, "Override the --target GPU's memory size (GiB)."
)
_LAYOUTS = flags.DEFINE_list(
    "state_sharding",
    None,
    "train.state_sharding layouts to compare (comma-separated, or all; results are keyed "
    "MODE/LAYOUT); default the config's.",
)
_ROUNDS = flags.DEFINE_integer(
    "rounds", 2, "With several --state_sharding: alternating timing rounds of --steps each."
)
_TARGET_GPUS = flags.DEFINE_integer(
    "target_gpus", 1, "GPUs of the --target GPU machine (one host), e.g. 8 for an 8-GPU node."
)
_TRACE_ONLY = flags.DEFINE_bool(
    "trace_only",
    False,
    "Trace only (no compile, nothing allocated): the state per device and the collectives' "
    "bytes, which depend on the device count alone (e.g. 16 CPU devices for a v5e-16).",
)
_DUMP_HLO = flags.DEFINE_string(
    "dump_hlo", None, "Write each compiled step's HLO text to DIR/MODE_LAYOUT.hlo.txt."
)
_OUT = flags.DEFINE_string(
    "out", None, "Write the results as JSON to this file (again after each mode)."
)
flags.mark_flags_as_required(["config"])

PyTree = Any
GIB = 2**30
TARGETS = Path(__file__).parent / "targets"


def prepare_deviceless() -> None:
    """Sets up JAX, before it starts a backend, to compile for devices that are not here: CPU
    as the host platform, no check of a CUDA install beside the plugin, and no Triton GEMM
    fusions (with no GPU to autotune them on, XLA finds no tile sizes for them; cuBLAS runs
    those matmuls instead, which needs the same buffers)."""
    os.environ["JAX_SKIP_CUDA_CONSTRAINTS_CHECK"] = "1"
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + " --xla_gpu_enable_triton_gemm=false"
    ).strip()
    jax.config.update("jax_platforms", "cpu")


def target_devices(name: str, memory_gib: float | None = None, gpus: int = 1) -> list[jax.Device]:
    """The devices of a machine that is not here, to compile for: `tpu:TOPOLOGY` (a Cloud TPU
    slice as JAX names it, e.g. `tpu:v5e:2x2`, `tpu:v5p:2x2x1`; needs `pip install libtpu`), or
    NAME, the one GPU described in benchmarks/targets/NAME.textproto (XLA's GpuTargetConfig;
    needs `pip install jax-cuda12-plugin==<jax version> nvidia-cudnn-cu12`: the plugin builds
    the executable, cuDNN is asked its version while tracing the fused attention).

    Must run after `prepare_deviceless`.
    Args:
      memory_gib: replaces the GPU's memory size (XLA rematerialises to fit it).
      gpus: GPUs of one machine (NVLink), for a GPU target.
    """
    if name.startswith("tpu:"):
        if memory_gib is not None:
            raise ValueError(f"--target_memory_gib is for GPU targets, not --target={name}")
        if gpus != 1:
            raise ValueError(f"--target_gpus is for GPU targets, not --target={name}")
        try:
            return list(topologies.get_topology_desc(name.removeprefix("tpu:"), "tpu").devices)
        except RuntimeError as e:
            if "not installed" not in str(e):
                raise
            raise RuntimeError(
                f"--target={name} compiles with libtpu, which is not installed: "
                f"pip install jax[tpu]=={jax.__version__}"
            ) from e
    path = TARGETS / f"{name}.textproto"
    if not path.is_file():
        known = sorted(p.stem for p in TARGETS.glob("*.textproto"))
        raise ValueError(f"--target={name}: no {path}; known GPU targets: {known}, or tpu:TOPOLOGY")
    text = path.read_text()
    if memory_gib is not None:
        size = f"device_memory_size: {int(memory_gib * GIB)}"
        text = re.sub(r"device_memory_size: \d+", size, text)
    try:
        topology = topologies.get_topology_desc(
            platform="cuda", target_config=text, topology=f"1x1x{gpus}"
        )
    except NotImplementedError as e:  # JAX without the plugin knows no CUDA topology.
        raise RuntimeError(
            f"--target={name} compiles with JAX's CUDA plugin, which is not installed: "
            f"pip install jax-cuda12-plugin=={jax.__version__} nvidia-cudnn-cu12"
        ) from e
    return list(topology.devices)


def random_encoder(
    config: ml_collections.ConfigDict, abstract: bool = False
) -> tuple[nn.Module, Callable[[PyTree, jax.Array], jax.Array], PyTree]:
    """The config's frozen encoder with random weights: (module, features, params).

    features: (params, uint8 images (B, H, W, 3)) -> (B, N, z_dim), the computation
    `sara_jax.encoders.load.load_encoder` builds around the published weights.
    abstract: params as shapes and dtypes only (jax.ShapeDtypeStruct), nothing computed.
    """
    module = encoder_module(config.encoder)
    size = config.encoder.image_size
    args = (jax.random.key(1), jnp.zeros((1, size, size, 3)))
    params = jax.eval_shape(module.init, *args) if abstract else jax.jit(module.init)(*args)
    return module, features_fn(config.encoder, module), params["params"]


def synthetic_batch(config: ml_collections.ConfigDict, batch: int) -> dict[str, np.ndarray]:
    """A global batch shaped as the data pipeline's: uint8 images, int32 labels and, in latent
    space, float16 VAE posterior means and standard deviations."""
    rng = np.random.default_rng(0)
    size = config.data.image_size
    out = {
        "image": rng.integers(0, 256, (batch, size, size, 3), dtype=np.uint8),
        "label": rng.integers(0, config.data.num_classes, (batch,), dtype=np.int32),
    }
    if config.data.space == "latent":
        shape = (batch, size // 8, size // 8, config.model.in_channels)
        out["latent_mean"] = rng.standard_normal(shape).astype(np.float16)
        out["latent_std"] = np.full(shape, 0.1, np.float16)
    return out


def place(tree: PyTree, sharding: NamedSharding, abstract: bool) -> PyTree:
    """`tree` on the mesh: device arrays, or (abstract) their shapes, dtypes and sharding."""
    if abstract:
        return jax.tree.map(
            lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), tree
        )
    return jax.device_put(tree, sharding)


def memory_figures(compiled, device: jax.Device | None) -> dict[str, float | None]:
    """XLA's static buffer assignment of the compiled step (per device, GiB) and the
    allocator's peak so far (None where the backend keeps no statistics, e.g. CPU, or when
    compiled for a device that is not here: `device` None)."""
    analysis = compiled.memory_analysis()
    assigned = None
    if analysis is not None:
        assigned = (
            analysis.argument_size_in_bytes
            + analysis.output_size_in_bytes
            + analysis.temp_size_in_bytes
            - analysis.alias_size_in_bytes
        ) / GIB
    stats = (device.memory_stats() if device is not None else None) or {}
    peak = stats.get("peak_bytes_in_use")
    return {"compiled_gib": assigned, "peak_in_use_gib": None if peak is None else peak / GIB}


# An HLO instruction line: name, opcode (after the shape, which may be a tuple), the rest.
_INSTRUCTION = re.compile(r"^\s*(?:ROOT )?%([\w.\-]+) = (?:\(.*?\)|\S+) ([\w\-]+)\((.*)$")
_COMPUTATION = re.compile(r"^(?:ENTRY )?%([\w.\-]+) ")
# Flax puts each module's class name in the ops' name scopes ("transpose(jvp(SiT))/blocks_3").
_COMPONENT = re.compile(
    r"(?<![A-Za-z])(SiT|ConvProjector|Projector|Discriminator|DinoV2|ClipVisionTransformer)\b"
)
_MATMUL_CALLS = ("__cublas", "__cudnn", "triton_gemm")
_COLLECTIVES = ("all-reduce", "all-gather", "reduce-scatter", "collective-permute", "all-to-all")
# Their trace events enclose those of the instructions they run: counting both would double.
_CONTAINERS = ("conditional", "while", "call")


def hlo_ops(hlo_text: str) -> dict[str, tuple[str, str]]:
    """instruction name -> (kind, model component) of a compiled executable's HLO text.

    kind: "matmul/conv" (dots, convolutions, fusions holding one, cuBLAS/cuDNN calls),
    "collective", "copy/transpose", "container" or "elementwise/other"; component: the
    outermost model module in the op's name scope, or "other" (inputs, losses, optimizer, EMA).
    """
    matmul_computations, computation, parsed = set(), None, []
    for line in hlo_text.splitlines():
        if header := _COMPUTATION.match(line):
            computation = header.group(1)
        elif op := _INSTRUCTION.match(line):
            name, opcode, rest = op.groups()
            parsed.append((name, opcode, rest))
            if opcode in ("dot", "convolution") or any(c in rest for c in _MATMUL_CALLS):
                matmul_computations.add(computation)
    ops = {}
    for name, opcode, rest in parsed:
        called = re.search(r"calls=%([\w.\-]+)", rest)
        if opcode in _CONTAINERS:
            kind = "container"
        elif opcode in _COLLECTIVES or opcode.removesuffix("-start") in _COLLECTIVES:
            kind = "collective"
        elif (
            opcode in ("dot", "convolution")
            or any(c in rest for c in _MATMUL_CALLS)
            or (called and called.group(1) in matmul_computations)
        ):
            kind = "matmul/conv"
        elif opcode in ("copy", "transpose") or "copy" in name or "transpose" in name:
            kind = "copy/transpose"
        else:
            kind = "elementwise/other"
        scope = re.search(r'op_name="([^"]*)"', rest)
        component = _COMPONENT.search(scope.group(1)) if scope else None
        ops[name] = (kind, component.group(1) if component else "other")
    return ops


def op_time_summary(trace_dir: Path, hlo_text: str, top: int = 8) -> dict:
    """Where the step's device time goes, from the perfetto trace jax.profiler wrote.

    Sums the trace events of the executable's instructions (their `hlo_op`) and returns the
    fractions by model component and by kind of op, and the `top` instructions; {} when the
    trace names no instruction (then open it in XProf or Perfetto).
    """
    files = sorted(trace_dir.glob("**/perfetto_trace.json.gz"))
    if not files:
        return {}
    with gzip.open(files[-1]) as f:
        events = json.load(f)["traceEvents"]
    ops = hlo_ops(hlo_text)
    per_op = Counter()
    for e in events:
        name = e.get("args", {}).get("hlo_op")
        if e.get("ph") == "X" and name in ops and ops[name][0] != "container":
            per_op[name] += e["dur"]
    if not per_op:
        return {}
    whole = sum(per_op.values())
    by_component, by_kind = Counter(), Counter()
    for name, duration in per_op.items():
        kind, component = ops[name]
        by_kind[kind] += duration / whole
        by_component[component] += duration / whole
    return {
        "by_component": dict(by_component.most_common()),
        "by_kind": dict(by_kind.most_common()),
        "top_ops": [
            (f"{name} [{', '.join(ops[name])}]", duration / whole)
            for name, duration in per_op.most_common(top)
        ],
    }


# Collective primitives of a step's jaxpr -> the kind of collective they are.
_COLLECTIVE_PRIMITIVES = {
    "psum": "all-reduce",
    "psum_invariant": "all-reduce",
    "all_gather": "all-gather",
    "all_gather_invariant": "all-gather",
    "reduce_scatter": "reduce-scatter",
}


def collective_bytes(jaxpr: jax_core.Jaxpr, num_devices: int) -> dict[str, float]:
    """Bytes the collectives of a step move per device, from its jaxpr (what the program asks
    for; the compiler may split, fuse or convert them, e.g. XLA's TPU compiler runs some
    reduce-scatters as an all-reduce and a slice).

    Per kind: `all-reduce`, `all-gather`, `reduce-scatter` the size of the whole buffers they
    act on (an all-gather's output, a reduce-scatter's input), and "wire" what a ring moves per
    device for all of them: 2(N-1)/N of an all-reduce's buffer, (N-1)/N of an all-gather's or
    reduce-scatter's. A loop's body counts once per iteration (gradient accumulation), a
    conditional its largest branch (D's update).
    """
    share = (num_devices - 1) / num_devices

    def walk(jaxpr: jax_core.Jaxpr) -> Counter:
        out = Counter()
        for eqn in jaxpr.eqns:
            kind = _COLLECTIVE_PRIMITIVES.get(eqn.primitive.name)
            if kind is not None:
                avals = eqn.outvars if kind == "all-gather" else eqn.invars
                out[kind] += sum(v.aval.size * v.aval.dtype.itemsize for v in avals)
            subs = [walk(sub) for sub in jax_core.jaxprs_in_params(eqn.params)]
            if eqn.primitive.name == "cond":
                subs = [max(subs, key=lambda c: sum(c.values()))]
            for sub in subs:
                for name, size in sub.items():
                    out[name] += size * eqn.params.get("length", 1)
        return out

    out = walk(jaxpr)
    wire = sum(size * (2 * share if kind == "all-reduce" else share) for kind, size in out.items())
    return {**out, "wire": wire}


def benchmark(
    base: ml_collections.ConfigDict,
    mode: str,
    batch: int,
    mesh: jax.sharding.Mesh,
    steps: int,
    warmup: int,
    peak_tflops: float | None,
    profile_dir: Path | None,
    ahead_of_time: bool = False,
    trace_only: bool = False,
    dump_hlo: str | None = None,
) -> dict:
    """Compiles and times the step of `base` with `mode`'s objective; returns its figures.

    ahead_of_time: `mesh` holds devices that are not here (`target_devices`): compile only, from
      shapes, and report no allocator peak and no timings.
    trace_only, dump_hlo: as `compile_step`'s.
    """
    result, run = compile_step(base, mode, batch, mesh, ahead_of_time, trace_only, dump_hlo)
    if steps == 0 or run is None:
        return result
    for _ in range(warmup):
        run()
    times = [run() for _ in range(steps)]
    if profile_dir is not None:
        result["profile"] = run.profile(profile_dir / mode)
    return result | run.figures(times, peak_tflops)


class Runner:
    """One compiled step with its own state, batch and encoder on the mesh: `run()` takes a
    step and returns its seconds (waited for)."""

    def __init__(self, compiled, state, data, encoder_params, config, counts, hlo_text, mesh):
        self.compiled, self.state, self.data, self.encoder_params = (
            compiled,
            state,
            data,
            encoder_params,
        )
        self.config, self.counts, self.hlo_text, self.mesh = config, counts, hlo_text, mesh

    def __call__(self) -> float:
        begin = time.perf_counter()
        self.state, self.metrics = self.compiled(self.state, self.data, self.encoder_params)
        jax.block_until_ready((self.state, self.metrics))
        return time.perf_counter() - begin

    def profile(self, trace_dir: Path) -> dict:
        """Share of op time from a jax.profiler trace of `disc.every` more steps."""
        with jax.profiler.trace(str(trace_dir), create_perfetto_trace=True):
            for _ in range(self.config.disc.every):
                self()
        return op_time_summary(trace_dir, self.hlo_text)

    def figures(self, times: list[float], peak_tflops: float | None) -> dict:
        """Step time, images/s, TFLOP/s, MFU and memory of the timed steps."""
        batch, num_devices = self.config.data.global_batch_size, self.mesh.devices.size
        step_s = float(np.mean(times))
        achieved = self.counts["total"] * batch / step_s / num_devices
        metrics = jax.device_get(self.metrics)
        return {
            "steps": len(times),
            "step_ms": 1e3 * step_s,
            "step_ms_min": 1e3 * min(times),
            "step_ms_max": 1e3 * max(times),
            "images_per_sec": batch / step_s,
            "achieved_tflops_per_device": achieved / 1e12,
            "mfu": achieved / (peak_tflops * 1e12) if peak_tflops else None,
            "memory": memory_figures(self.compiled, self.mesh.devices.flat[0]),
            "loss": float(metrics["loss"]),
            "nonfinite": bool(metrics["nonfinite"]),
        }


def compile_step(
    base: ml_collections.ConfigDict,
    mode: str,
    batch: int,
    mesh: jax.sharding.Mesh,
    ahead_of_time: bool = False,
    trace_only: bool = False,
    dump_hlo: str | None = None,
) -> tuple[dict, Runner | None]:
    """Compiles the step of `base` with `mode`'s objective, the state laid out as its
    `train.state_sharding` says; returns its compile figures and a Runner (None ahead of time).

    trace_only: stop after tracing (state per device, collectives), nothing compiled.
    dump_hlo: a folder to write the compiled step's HLO text to.
    """
    config = copy.deepcopy(base)
    set_alignment(config, MODES[mode])
    config.data.global_batch_size = batch
    num_devices = mesh.devices.size
    validate(config, num_devices=num_devices)
    replicated, rows = NamedSharding(mesh, P()), NamedSharding(mesh, P(AXIS))

    encoder, features, encoder_params = random_encoder(config, abstract=ahead_of_time)
    if mode == "sit":  # A plain SiT never reads the encoder: keep its weights off the device.
        encoder_params = {}
    num_tokens = (config.encoder.image_size // encoder.patch_size) ** 2
    models = build_models(config, encoder.embed_dim)

    def init(key: jax.Array) -> TrainState:
        return create_train_state(config, models, num_tokens, key)

    key = jax.random.key(config.seed)
    abstract = jax.eval_shape(init, key)
    layout = state_shardings(abstract, config.train.state_sharding, mesh)
    ahead_of_time = ahead_of_time or trace_only  # Either needs shapes only.
    if ahead_of_time:
        state = jax.tree.map(
            lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), abstract, layout
        )
    else:
        state = jax.jit(init, out_shardings=layout)(key)
    data = place(synthetic_batch(config, batch), rows, ahead_of_time)
    encoder_params = place(encoder_params, replicated, ahead_of_time)
    step = make_train_step(config, models, features, mesh)

    start = time.perf_counter()
    program = step.trace(state, data, encoder_params)
    traced = time.perf_counter()
    state_bytes = sum(
        math.prod(s.shard_shape(x.shape)) * x.dtype.itemsize
        for x, s in zip(jax.tree.leaves(abstract), jax.tree.leaves(layout), strict=True)
    )
    result = {
        "mode": mode,
        "state_sharding": config.train.state_sharding,
        "global_batch": batch,
        "num_devices": num_devices,
        "compute_dtype": config.model.compute_dtype,
        "remat": config.model.remat,
        "grad_accum_steps": config.train.grad_accum_steps,
        "trace_s": traced - start,
        # The TrainState's bytes on one device, and the share of the state kept replicated.
        "state_gib_per_device": state_bytes / GIB,
        "state_replicated_fraction": replicated_fraction(abstract, num_devices),
        "collective_bytes": collective_bytes(program.jaxpr.jaxpr, num_devices),
    }
    if trace_only:
        return result, None
    lowered = program.lower()
    lowered_at = time.perf_counter()
    compiled = lowered.compile()
    compiled_at = time.perf_counter()
    counts = flops.train_step(config, *models, encoder)
    xla_cost = compiled.cost_analysis() or {}
    hlo_text = compiled.as_text()
    if dump_hlo:
        path = Path(dump_hlo) / f"{mode}_{config.train.state_sharding}.hlo.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(hlo_text)
    result |= {
        "trace_s": lowered_at - start,
        "compile_s": compiled_at - lowered_at,
        "flops_per_image": counts,
        # XLA's count of the per-device program: includes elementwise work, see training/flops.py.
        "xla_flops_per_image": xla_cost.get("flops", 0.0) * num_devices / batch or None,
        "memory": memory_figures(compiled, None if ahead_of_time else mesh.devices.flat[0]),
        # Forward and backward calls of cuDNN's fused attention (0: XLA's attention throughout).
        "cudnn_attention_calls": hlo_text.count('custom_call_target="__cudnn$fmha'),
    }
    if ahead_of_time:
        return result, None
    return result, Runner(compiled, state, data, encoder_params, config, counts, hlo_text, mesh)


def _fmt(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def print_table(results: dict[str, dict]) -> None:
    header = (
        f"{'mode':<18} {'img/s':>9} {'step ms':>9} {'GFLOP/img':>10} {'TFLOP/s':>8} {'MFU':>6} "
        f"{'compile s':>9} {'XLA GiB':>8} {'peak GiB':>8} {'state GiB':>9} {'wire GiB':>8}"
    )
    print(header)
    for mode, r in results.items():
        if "error" in r:
            print(f"{mode:<18} {r['error']}")
            continue
        memory, flops_per_image = r.get("memory", {}), r.get("flops_per_image", {})
        gflops = flops_per_image["total"] / 1e9 if flops_per_image else None
        print(
            f"{mode:<18} {_fmt(r.get('images_per_sec'), '9.1f')} "
            f"{_fmt(r.get('step_ms'), '9.1f')} {_fmt(gflops, '10.2f')} "
            f"{_fmt(r.get('achieved_tflops_per_device'), '8.2f')} {_fmt(r.get('mfu'), '6.1%')} "
            f"{r['trace_s'] + r.get('compile_s', 0):9.1f} "
            f"{_fmt(memory.get('compiled_gib'), '8.2f')} "
            f"{_fmt(memory.get('peak_in_use_gib'), '8.2f')} {r['state_gib_per_device']:9.2f} "
            f"{r['collective_bytes']['wire'] / GIB:8.2f}"
        )
        for group, fractions in r.get("profile", {}).items():
            items = fractions.items() if isinstance(fractions, dict) else fractions
            print(f"      {group}: " + ", ".join(f"{name} {f:.1%}" for name, f in items))


def overheads(results: dict[str, dict]) -> dict[str, float]:
    """Relative step-time overheads: REPA over a plain SiT, SARA over REPA."""
    out = {}
    for new, old in (("repa", "sit"), ("sara", "repa")):
        if "step_ms" in results.get(new, {}) and "step_ms" in results.get(old, {}):
            out[f"{new}_over_{old}"] = results[new]["step_ms"] / results[old]["step_ms"] - 1
    return out


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    config = _CONFIG.value
    if _TARGET.value:
        prepare_deviceless()
        devices = target_devices(_TARGET.value, _TARGET_MEMORY.value, _TARGET_GPUS.value)
    else:
        devices = jax.devices()[: _NUM_DEVICES.value] if _NUM_DEVICES.value else jax.devices()
    mesh = data_mesh(devices)
    kind = devices[0].device_kind
    peak = _PEAK.value or flops.PEAK_BF16_TFLOPS.get(kind)
    batch = _BATCH.value or config.data.global_batch_size
    profile_dir = Path(_PROFILE_DIR.value) if _PROFILE_DIR.value else None
    modes = list(MODES) if _MODE.value == "all" else [_MODE.value]
    results = {}
    report = {
        "device_kind": kind,
        "platform": devices[0].platform,
        "num_devices": len(devices),
        "peak_bf16_tflops_per_device": peak,
        "target": _TARGET.value,
        "target_memory_gib": _TARGET_MEMORY.value,
        "jax_version": jax.__version__,
        "flax_version": flax.__version__,
        "config_file": config_flags.get_config_filename(flags.FLAGS["config"]),
        "config_overrides": config_flags.get_override_values(flags.FLAGS["config"]),
        "model": {k: config.model[k] for k in ("depth", "hidden_size", "patch_size")},
        "encoder": config.encoder.name,
        "results": results,
    }
    layouts = _LAYOUTS.value or [config.train.state_sharding]
    layouts = list(LAYOUTS) if layouts == ["all"] else layouts
    if unknown := set(layouts) - set(LAYOUTS):
        raise app.UsageError(f"--state_sharding: {sorted(unknown)} not in {', '.join(LAYOUTS)}")
    for mode in modes:
        if not _LAYOUTS.value:  # The config's layout: results keyed by mode alone.
            config.train.state_sharding = layouts[0]
            results[mode] = benchmark(
                config,
                mode,
                batch,
                mesh,
                _STEPS.value,
                _WARMUP.value,
                peak,
                profile_dir,
                ahead_of_time=bool(_TARGET.value),
                trace_only=_TRACE_ONLY.value,
                dump_hlo=_DUMP_HLO.value,
            )
        else:
            results |= compare_layouts(
                config, mode, layouts, batch, mesh, peak, bool(_TARGET.value)
            )
        report["overheads"] = overheads(results)
        report["layout_ratios"] = layout_ratios(results)
        if _OUT.value:  # After each mode: a run stopped by a time box keeps the modes it did.
            write_json(Path(_OUT.value), report)
    print(f"{kind} x {len(devices)}, jax {jax.__version__}, global batch {batch}")
    print_table(results)
    for name, value in {**report["overheads"], **report["layout_ratios"]}.items():
        print(f"{name}: {value:+.1%} step time")


def compare_layouts(
    config: ml_collections.ConfigDict,
    mode: str,
    layouts: list[str],
    batch: int,
    mesh: jax.sharding.Mesh,
    peak: float | None,
    ahead_of_time: bool,
) -> dict[str, dict]:
    """`mode`'s step under each `train.state_sharding` of `layouts`, as "MODE/LAYOUT": all
    compiled and warmed up first, then timed in `--rounds` alternating rounds of `--steps` each,
    so a machine's drift (other jobs, clocks) falls on every layout alike."""
    results, runners = {}, {}
    for layout in layouts:
        config.train.state_sharding = layout
        try:
            results[f"{mode}/{layout}"], runners[layout] = compile_step(
                config, mode, batch, mesh, ahead_of_time, _TRACE_ONLY.value, _DUMP_HLO.value
            )
        except jax.errors.JaxRuntimeError as e:  # Does not fit: a finding, not a failure.
            if "RESOURCE_EXHAUSTED" not in str(e):
                raise
            message = str(e).splitlines()[0]
            results[f"{mode}/{layout}"] = {"mode": mode, "state_sharding": layout, "error": message}
            print(f"{mode}/{layout}: {message}", flush=True)
    runners = {layout: run for layout, run in runners.items() if run is not None}
    if ahead_of_time or _STEPS.value == 0:
        return results
    for run in runners.values():
        for _ in range(_WARMUP.value):
            run()
    times = {layout: [] for layout in layouts}
    for _ in range(_ROUNDS.value):
        for layout, run in runners.items():
            times[layout] += [run() for _ in range(_STEPS.value)]
    for layout, run in runners.items():
        results[f"{mode}/{layout}"] |= run.figures(times[layout], peak)
    return results


def layout_ratios(results: dict[str, dict]) -> dict[str, float]:
    """Step time of each sharded layout relative to "replicated", per objective mode."""
    out = {}
    for name, r in results.items():
        mode, _, layout = name.partition("/")
        base = results.get(f"{mode}/replicated", {})
        if layout not in ("", "replicated") and "step_ms" in r and "step_ms" in base:
            out[f"{name}_over_replicated"] = r["step_ms"] / base["step_ms"] - 1
    return out


if __name__ == "__main__":
    app.run(main)
