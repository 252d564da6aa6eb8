"""`python -m sara_jax.evaluate` on a pytorch-fid-format .pth (tests/fid_inception_torch.py)."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sara_jax.models.inception import preprocess

pytest.importorskip("torch")

from fid_inception_torch import calibrated_reference  # noqa: E402


@pytest.fixture(scope="module")
def images() -> jax.Array:
    """Two preprocessed (smooth, upsampled) random images, (2, 299, 299, 3) in [-1, 1]."""
    pixels = np.random.default_rng(0).integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
    return preprocess(jnp.asarray(pixels), "pytorch_fid")


@pytest.fixture(scope="module")
def reference(images, tmp_path_factory):
    """(torch model with calibrated-then-randomised BatchNorms, its .pth path)."""
    path = tmp_path_factory.mktemp("inception") / "pt_inception-random.pth"
    return calibrated_reference(images, path), path


def test_evaluate_command_end_to_end(reference, tmp_path):
    """`python -m sara_jax.evaluate` on a pytorch-fid-format .pth: prints and writes the metrics."""
    rng = np.random.default_rng(4)
    samples = rng.integers(0, 256, (12, 32, 32, 3), dtype=np.uint8)
    np.savez(tmp_path / "samples.npz", arr_0=samples)
    np.savez(tmp_path / "ref.npz", arr_0=rng.integers(0, 256, (12, 32, 32, 3), dtype=np.uint8))
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "sara_jax.evaluate",
            f"--samples={tmp_path / 'samples.npz'}",
            f"--reference={tmp_path / 'ref.npz'}",
            f"--inception={reference[1]}",
            "--batch_size=12",
            "--unrecorded",
        ],
        capture_output=True,
        text=True,
        env=dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1"),
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    written = json.loads((tmp_path / "metrics.json").read_text())
    assert written["num_samples"] == 12 and written["preprocessing"] == "adm"
    for name in ("fid", "sfid", "inception_score", "precision", "recall"):
        assert np.isfinite(written[name]), name
        assert f"{name}: " in result.stdout
    assert written["fid"] > 0 and 0 <= written["precision"] <= 1
