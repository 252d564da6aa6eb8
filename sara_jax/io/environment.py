"""What a result was computed on: the facts that can change a run's numbers across machines.

A run's figures agree to the printed digit on the same machine and versions; on another CPU
(another instruction set, AVX-512 or AMX) or another jax, float32 arithmetic rounds
differently and training curves drift apart after a few hundred steps (docs/demo.md). So every
training run, every shipped instrument and the study's summary record this.
"""

import platform
import sys
from importlib import metadata
from typing import Any

import jax

# The packages whose versions decide the arithmetic (jaxlib: XLA's kernels) or the model code.
PACKAGES = ("jax", "jaxlib", "flax", "optax", "numpy")


def cpu_model() -> str:
    """The CPU's model name (Linux's /proc/cpuinfo), else what `platform` knows."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags() -> list[str]:
    """The CPU's vector extensions that XLA's CPU kernels use and that change float32
    rounding (fused multiply-add, AVX-512, AMX), as /proc/cpuinfo lists them; [] elsewhere."""
    try:
        with open("/proc/cpuinfo") as f:
            listed = next((line for line in f if line.startswith("flags")), "")
    except OSError:
        return []
    found = listed.partition(":")[2].split()
    return sorted(f for f in found if f in ("fma", "avx2") or f.startswith(("avx512", "amx")))


def environment() -> dict[str, Any]:
    """{"cpu", "cpu_flags", "platform", "device_kind", "devices", "processes", "python",
    "packages": {name: version}} of this process."""
    devices = jax.devices()
    return {
        "cpu": cpu_model(),
        "cpu_flags": cpu_flags(),
        "platform": devices[0].platform,
        "device_kind": devices[0].device_kind,
        "devices": len(devices),
        "processes": jax.process_count(),
        "python": sys.version.split()[0],
        "packages": {name: _version(name) for name in PACKAGES},
    }


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"
