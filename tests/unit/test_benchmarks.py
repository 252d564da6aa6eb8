"""The train-step benchmark's --target: known names, and the packages it needs (the benchmarks
themselves: e2e/test_benchmarks_e2e.py)."""

import importlib.metadata

import jax
import jax.numpy as jnp
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


def test_collective_bytes_counts_each_collective_of_the_program():
    from jax import lax
    from jax.sharding import PartitionSpec as P

    from benchmarks.train_step import collective_bytes
    from sara_jax.training.sharding import data_mesh

    def local(x, flag):  # x: this device's (4, 8) float32 rows
        def body(carry, _):  # Twice: an all-gather of (16, 8) and a reduce-scatter of (4, 8).
            whole = lax.all_gather(x, "data", axis=0, tiled=True)
            return carry + lax.psum_scatter(whole[:4], "data", tiled=True).sum(), None

        total, _ = lax.scan(body, lax.pcast(0.0, "data", to="varying"), None, length=2)
        # A conditional counts its largest branch: an all-reduce of (4, 8) floats.
        total += lax.cond(flag, lambda: lax.psum(x, "data").sum(), lambda: 0.0)
        return lax.psum(total, "data")  # A scalar all-reduce.

    mesh = data_mesh(jax.devices()[:4])
    step = jax.shard_map(local, mesh=mesh, in_specs=(P("data"), P()), out_specs=P())
    jaxpr = jax.make_jaxpr(step)(jnp.zeros((16, 8)), True).jaxpr
    out = collective_bytes(jaxpr, num_devices=4)
    assert out["all-gather"] == 2 * 16 * 8 * 4  # the gathered output, each iteration
    assert out["reduce-scatter"] == 2 * 4 * 8 * 4  # the whole input, each iteration
    assert out["all-reduce"] == 4 * 8 * 4 + 4
    # A ring moves 2(N-1)/N of an all-reduce's buffer, (N-1)/N of the others'.
    expected = (out["all-gather"] + out["reduce-scatter"]) * 0.75 + out["all-reduce"] * 1.5
    assert out["wire"] == pytest.approx(expected)


def test_target_gpus_is_for_gpu_targets():
    from benchmarks.train_step import target_devices

    with pytest.raises(ValueError, match="--target_gpus is for GPU targets"):
        target_devices("tpu:v5e:2x4", gpus=8)
