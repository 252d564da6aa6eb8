"""End to end: `python -m sara_jax.main` on a shrunken demo config (8 CPU devices)."""

import os
import subprocess
import sys

import numpy as np
import orbax.checkpoint as ocp
from helpers import tiny_flags
from PIL import Image
from safetensors.numpy import save_file

SMALL = tiny_flags(
    **{
        "encoder.pretrain.steps": 5,
        "encoder.pretrain.num_examples": 64,
        "encoder.pretrain.batch_size": 32,
        "data.num_examples": 640,
        "data.global_batch_size": 16,
        "train.log_every": 2,
        "train.checkpoint_every": 3,
        "sample.num_steps": 2,
        "sample.per_class": 2,
    }
)


def run_main(tmp_path, *flags, module: str = "sara_jax.main", devices: int = 8):
    """`python -m module` on the SMALL demo config with workdir tmp_path/run, `devices` CPU
    devices."""
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
    return subprocess.run(
        [
            sys.executable,
            "-m",
            module,
            f"--workdir={tmp_path / 'run'}",
            *SMALL,
            f"--config.encoder.pretrain.cache_dir={tmp_path / 'cache'}",
            *flags,
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )


def torchvision_resnet18_trunk(path) -> dict[str, np.ndarray]:
    """Random ResNet-18 bn1/layer1/layer2 weights in torchvision naming, saved to `path`."""
    rng = np.random.default_rng(0)
    tensors = {}

    def bn(name, c):
        for field in ("weight", "bias", "running_mean"):
            tensors[f"{name}.{field}"] = rng.normal(size=c).astype(np.float32)
        tensors[f"{name}.running_var"] = rng.uniform(0.5, 2.0, size=c).astype(np.float32)

    bn("bn1", 64)
    for layer, c_in, c in ((1, 64, 64), (2, 64, 128)):
        for i in (0, 1):
            block = f"layer{layer}.{i}"
            first_in = c_in if i == 0 else c
            tensors[f"{block}.conv1.weight"] = rng.normal(size=(c, first_in, 3, 3), scale=0.05)
            tensors[f"{block}.conv2.weight"] = rng.normal(size=(c, c, 3, 3), scale=0.05)
            bn(f"{block}.bn1", c)
            bn(f"{block}.bn2", c)
    tensors["layer2.0.downsample.0.weight"] = rng.normal(size=(128, 64, 1, 1), scale=0.05)
    bn("layer2.0.downsample.1", 128)
    tensors = {k: v.astype(np.float32) for k, v in tensors.items()}
    save_file(tensors, path)
    return tensors


def test_demo_run_writes_checkpoints_samples_and_resumes(tmp_path):
    resnet = torchvision_resnet18_trunk(tmp_path / "resnet18.safetensors")
    result = run_main(
        tmp_path,
        "--config.train.num_steps=4",
        f"--config.disc.checkpoint={tmp_path / 'resnet18.safetensors'}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    workdir = tmp_path / "run"
    assert sorted(p.name for p in (workdir / "checkpoints").iterdir()) == ["3", "4"]
    grid = np.asarray(Image.open(workdir / "samples.png"))
    # 10 classes x 2 samples of 32x32 images with 2-pixel padding.
    assert grid.shape == (10 * 34 + 2, 2 * 34 + 2, 3)
    assert "velocity=" in result.stderr and "struc=" in result.stderr
    # D started from the ResNet weights; frozen BatchNorm statistics never move.
    state = ocp.StandardCheckpointer().restore((workdir / "checkpoints" / "3" / "state").absolute())
    stats = state["disc"]["batch_stats"]
    np.testing.assert_array_equal(
        stats["layer2_0"]["downsample_bn"]["var"], resnet["layer2.0.downsample.1.running_var"]
    )
    np.testing.assert_array_equal(stats["bn1"]["mean"], resnet["bn1.running_mean"])

    resumed = run_main(tmp_path, "--config.train.num_steps=6")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from step 4" in resumed.stderr
    assert "6" in {p.name for p in (workdir / "checkpoints").iterdir()}


def test_bad_override_names_the_field(tmp_path):
    result = run_main(tmp_path, "--config.optim.lr=-1.0")
    assert result.returncode != 0
    assert "config.optim.lr must be > 0, got -1.0" in result.stderr
    result = run_main(tmp_path, "--config.optim.lrr=1.0")
    assert result.returncode != 0
    assert "lrr" in result.stderr
