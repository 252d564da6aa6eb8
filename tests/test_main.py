"""End to end: `python -m sara_jax.main` on a shrunken demo config (8 CPU devices)."""

import os
import subprocess
import sys

import numpy as np
from PIL import Image

SMALL = [
    "--config=configs/demo.py",
    "--config.model.depth=2",
    "--config.model.hidden_size=32",
    "--config.model.num_heads=2",
    "--config.model.encoder_depth=1",
    "--config.projector.width=32",
    "--config.encoder.arch.embed_dim=16",
    "--config.encoder.arch.depth=1",
    "--config.encoder.arch.num_heads=2",
    "--config.encoder.pretrain.steps=5",
    "--config.encoder.pretrain.num_examples=64",
    "--config.encoder.pretrain.batch_size=32",
    "--config.data.num_examples=640",
    "--config.data.global_batch_size=16",
    "--config.train.log_every=2",
    "--config.train.checkpoint_every=3",
    "--config.sample.num_steps=2",
    "--config.sample.per_class=2",
]


def run_main(tmp_path, *flags):
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8")
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "sara_jax.main",
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


def test_demo_run_writes_checkpoints_samples_and_resumes(tmp_path):
    result = run_main(tmp_path, "--config.train.num_steps=4")
    assert result.returncode == 0, result.stderr[-3000:]
    workdir = tmp_path / "run"
    assert sorted(p.name for p in (workdir / "checkpoints").iterdir()) == ["3", "4"]
    grid = np.asarray(Image.open(workdir / "samples.png"))
    # 10 classes x 2 samples of 32x32 images with 2-pixel padding.
    assert grid.shape == (10 * 34 + 2, 2 * 34 + 2, 3)
    assert "velocity=" in result.stderr and "struc=" in result.stderr

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
