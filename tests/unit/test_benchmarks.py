"""The train-step benchmark's --target: known names, and the packages it needs (the benchmarks
themselves: e2e/test_benchmarks_e2e.py)."""

import importlib.metadata

import jax
import pytest


def test_target_names_the_known_targets():
    from benchmarks.train_step import target_devices

    with pytest.raises(ValueError, match=r"--target=b200: no .*b200.textproto.*'h100_sxm'"):
        target_devices("b200")


def skip_if_installed(distribution: str) -> None:
    """Skips a test of what happens without `distribution` where it is installed."""
    try:
        importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return
    pytest.skip(f"{distribution} is installed here")


def test_target_without_the_cuda_plugin_says_what_to_install():
    from benchmarks.train_step import target_devices

    skip_if_installed("jax-cuda12-plugin")
    with pytest.raises(RuntimeError, match=rf"pip install jax-cuda12-plugin=={jax.__version__}"):
        target_devices("h100_sxm")


def test_tpu_target_without_libtpu_says_what_to_install():
    from benchmarks.train_step import target_devices

    skip_if_installed("libtpu")
    with pytest.raises(RuntimeError, match=rf"pip install jax\[tpu\]=={jax.__version__}"):
        target_devices("tpu:v5e:2x2")
    with pytest.raises(ValueError, match="--target_memory_gib is for GPU targets"):
        target_devices("tpu:v5e:2x2", memory_gib=16)
