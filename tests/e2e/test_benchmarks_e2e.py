"""Smoke tests of the benchmarks: a few steps of a shrunken demo config on 8 CPU devices (the
--target errors: unit/test_benchmarks.py)."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import jax
import pytest
from helpers import tiny_flags

ROOT = Path(__file__).resolve().parents[2]
# The tiny model with one block and D every second step.
BENCHMARK = {"model.depth": 1, "disc.every": 2}
TINY = tiny_flags(**BENCHMARK)


def run_benchmark(module: str, tmp_path: Path, *flags: str) -> dict:
    """`python -m benchmarks.<module>` on the TINY config; returns the JSON it wrote."""
    out = tmp_path / f"{module}.json"
    # Nothing here is timed for its value: XLA's cheaper LLVM optimisation halves the compiles.
    xla_flags = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count=8 {xla_flags}")
    proc = subprocess.run(
        [sys.executable, "-m", f"benchmarks.{module}", *TINY, *flags, f"--out={out}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text())


def test_train_step_benchmark_times_all_three_modes(tmp_path):
    report = run_benchmark(
        "train_step",
        tmp_path,
        "--batch=16",
        "--steps=2",
        "--warmup=1",
        "--peak_tflops=0.5",
        f"--profile_dir={tmp_path / 'profile'}",
    )
    assert report["device_kind"] == "cpu" and report["num_devices"] == 8
    assert report["config_overrides"]["model.depth"] == 1
    results = report["results"]
    assert list(results) == ["sit", "repa", "sara"]
    for mode, r in results.items():
        assert r["global_batch"] == 16 and r["steps"] == 2, mode
        assert r["step_ms"] > 0 and r["compile_s"] > 0 and r["trace_s"] > 0
        assert math.isclose(r["images_per_sec"], 16 / (r["step_ms"] / 1e3))
        assert math.isclose(r["mfu"], r["achieved_tflops_per_device"] / 0.5)
        assert r["memory"]["compiled_gib"] > 0 and r["memory"]["peak_in_use_gib"] is None
        assert r["xla_flops_per_image"] > 0
        assert math.isfinite(r["loss"]) and not r["nonfinite"]
        assert sum(r["profile"]["by_component"].values()) == pytest.approx(1.0)
        assert "SiT" in r["profile"]["by_component"]
    counts = {mode: r["flops_per_image"] for mode, r in results.items()}
    assert counts["sit"]["encoder"] == counts["sit"]["disc_adv"] == 0
    assert counts["repa"]["encoder"] > 0 and counts["repa"]["disc_step"] == 0
    assert counts["sara"]["disc_step"] > 0
    assert counts["sit"]["total"] < counts["repa"]["total"] < counts["sara"]["total"]
    assert "Discriminator" in results["sara"]["profile"]["by_component"]
    assert set(report["overheads"]) == {"repa_over_sit", "sara_over_repa"}


def test_sample_benchmark(tmp_path):
    report = run_benchmark(
        "sample_throughput", tmp_path, "--batch=16", "--num_steps=2", "--repeats=1"
    )
    # The demo samples with Euler and guidance 2: two steps of a doubled batch.
    assert report["method"] == "euler" and report["velocity_evaluations"] == 4
    assert report["images_per_sec"] > 0 and report["compile_s"] > 0
    assert report["flops_per_image"] > 0 and report["mfu"] is None


def test_compiling_from_shapes_builds_the_program_that_runs(tiny_config):
    """--target's path (abstract state, batch and encoder, nothing computed) gives the same
    executable as the timed path, here both on the CPU mesh."""
    from benchmarks.train_step import benchmark
    from sara_jax.training.sharding import data_mesh

    mesh = data_mesh(jax.devices()[:2])
    runs = [
        benchmark(tiny_config(BENCHMARK), "sara", 4, mesh, 0, 0, None, None, ahead_of_time=aot)
        for aot in (False, True)
    ]
    for key in ("memory", "xla_flops_per_image", "flops_per_image", "cudnn_attention_calls"):
        assert runs[0][key] == runs[1][key], key
    assert runs[1]["memory"]["peak_in_use_gib"] is None and "step_ms" not in runs[1]


def test_trace_only_compares_the_layouts_without_compiling(tmp_path):
    report = run_benchmark(
        "train_step", tmp_path, "--batch=16", "--mode=sara", "--state_sharding=all", "--trace_only"
    )
    results = report["results"]
    assert list(results) == ["sara/replicated", "sara/weight_update", "sara/fsdp"]
    assert all("compile_s" not in r and "memory" not in r for r in results.values())
    state = [r["state_gib_per_device"] for r in results.values()]
    assert state[0] > state[1] > state[2]
    wire = {name: r["collective_bytes"]["wire"] for name, r in results.items()}
    # An all-reduce is a reduce-scatter and an all-gather: the same bytes.
    assert wire["sara/weight_update"] == pytest.approx(wire["sara/replicated"], rel=1e-3)
    # In float32 (this config) fsdp gathers its blocks' float32 params twice.
    assert wire["sara/fsdp"] > wire["sara/weight_update"]
