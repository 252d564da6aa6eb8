"""A REPA PyTorch run continued in JAX: `python -m sara_jax.convert --denoiser=...` into a new
workdir, then `python -m sara_jax.main` and `python -m sara_jax.sample` on it (1 CPU device)."""

import re

import numpy as np
import orbax.checkpoint as ocp
import pytest
from helpers import tiny_config
from parity.test_convert_sit import repa_checkpoint
from test_main import run_main, torchvision_resnet18_trunk

torch = pytest.importorskip("torch")

STEPS = 123


def test_a_converted_repa_checkpoint_trains_on_from_its_step_and_samples(tmp_path):
    torch.save(repa_checkpoint(tiny_config(), steps=STEPS), tmp_path / "repa.pt")
    resnet = torchvision_resnet18_trunk(tmp_path / "resnet18.safetensors")
    converted = run_main(
        tmp_path,
        f"--denoiser={tmp_path / 'repa.pt'}",
        "--denoiser_format=repa",
        f"--config.disc.checkpoint={tmp_path / 'resnet18.safetensors'}",
        module="sara_jax.convert",
        devices=1,
    )
    assert converted.returncode == 0, converted.stderr[-3000:]
    checkpoints = tmp_path / "run" / "checkpoints"
    assert [p.name for p in checkpoints.iterdir()] == [str(STEPS)]
    state = ocp.StandardCheckpointer().restore((checkpoints / str(STEPS) / "state").absolute())
    assert int(state["step"]) == STEPS
    # D as a fresh run of this config starts it: the ImageNet trunk's statistics.
    np.testing.assert_array_equal(
        state["disc"]["batch_stats"]["bn1"]["mean"], resnet["bn1.running_mean"]
    )

    trained = run_main(
        tmp_path, "--config.train.num_steps=125", "--config.train.log_every=1", devices=1
    )
    assert trained.returncode == 0, trained.stderr[-3000:]
    log = trained.stderr
    assert f"resumed from step {STEPS}" in log
    assert "the data order starts afresh" in log
    losses = {
        int(m[1]): float(m[2]) for m in re.finditer(r"\] \[(\d+)\] adv=.*? loss=([-\d.e]+)", log)
    }
    assert sorted(losses) == [124, 125] and all(np.isfinite(list(losses.values()))), losses
    assert sorted(p.name for p in checkpoints.iterdir()) == [str(STEPS), "125"]

    sampled = run_main(
        tmp_path,
        "--config.sample.num_samples=4",
        "--config.sample.batch_size=4",
        "--config.sample.num_steps=2",
        module="sara_jax.sample",
        devices=1,
    )
    assert sampled.returncode == 0, sampled.stderr[-3000:]
    (samples,) = (tmp_path / "run").glob("samples_125_*/samples.npz")
    samples = np.load(samples)
    assert samples["arr_0"].shape == (4, 32, 32, 3)
