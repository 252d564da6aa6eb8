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


def test_collective_bytes_reads_the_buffers_of_each_collective():
    from benchmarks.train_step import collective_bytes

    hlo = "\n".join(
        [
            "ENTRY %main {",
            "  %all-reduce.1 = f32[1024]{0} all-reduce(%p), channel_id=1, to_apply=%add",
            "  %ag = (bf16[256,4]{1,0}, bf16[1024,4]{1,0}) all-gather-start(%q), dimensions={0}",
            "  %ag.done = bf16[1024,4]{1,0} all-gather-done(%ag)",
            "  %rs = f32[32]{0} reduce-scatter(%r), dimensions={0}, to_apply=%add",
            "  %rs2 = (f32[64]{0}, f32[16]{0}) reduce-scatter-start(%s), dimensions={0}",
            "  %add.3 = f32[1024]{0} add(%all-reduce.1, %all-reduce.1)",
            "}",
        ]
    )
    out = collective_bytes(hlo, num_devices=4)
    assert out["all-reduce"] == 4096  # 1024 floats
    assert out["all-gather"] == 1024 * 4 * 2  # the gathered bf16 result, not the operand
    # Its whole input: 4 devices' outputs (an async one's result, not its operand as well).
    assert out["reduce-scatter"] == (32 + 16) * 4 * 4
    # A ring moves 2(N-1)/N of an all-reduce's buffer, (N-1)/N of the others'.
    assert out["wire"] == pytest.approx(4096 * 1.5 + (8192 + 768) * 0.75)


def test_target_gpus_is_for_gpu_targets():
    from benchmarks.train_step import target_devices

    with pytest.raises(ValueError, match="--target_gpus is for GPU targets"):
        target_devices("tpu:v5e:2x4", gpus=8)
