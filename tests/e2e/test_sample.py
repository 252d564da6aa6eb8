"""`python -m sara_jax.sample` on a tiny trained demo model: resumed = uninterrupted."""

import numpy as np
import pytest
from test_main import run_main

SAMPLE_FLAGS = [
    "--config.sample.num_samples=20",
    "--config.sample.batch_size=8",
    "--config.sample.labels=balanced",
    "--config.sample.method=sde",
    "--config.sample.num_steps=3",
    "--config.sample.cfg_scale=1.5",
    "--config.sample.guidance_high=0.7",
]


def run_sample(tmp_path, *flags):
    # run_main's environment and SMALL config, but the sample module.
    return run_main(tmp_path, *flags, module="sara_jax.sample")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("sample")
    result = run_main(workdir, "--config.train.num_steps=2", "--config.train.checkpoint_every=2")
    assert result.returncode == 0, result.stderr[-3000:]
    return workdir


def test_resumed_sampling_draws_exactly_the_uninterrupted_samples(trained):
    result = run_sample(trained, *SAMPLE_FLAGS)
    assert result.returncode == 0, result.stderr[-3000:]
    out = trained / "run" / "samples_2"
    full = np.load(out / "samples.npz")
    assert full["arr_0"].shape == (20, 32, 32, 3) and full["arr_0"].dtype == np.uint8
    np.testing.assert_array_equal(full["arr_1"], np.arange(20) % 10)
    assert (out / "grid.png").is_file()

    # A run killed after its first chunk: only chunk 0 exists.
    for name in ("chunk_000001.npz", "chunk_000002.npz", "samples.npz"):
        (out / name).unlink()
    result = run_sample(trained, *SAMPLE_FLAGS)
    assert result.returncode == 0, result.stderr[-3000:]
    resumed = np.load(out / "samples.npz")
    np.testing.assert_array_equal(resumed["arr_0"], full["arr_0"])
    np.testing.assert_array_equal(resumed["arr_1"], full["arr_1"])


def test_missing_checkpoint_is_named(tmp_path):
    result = run_sample(tmp_path, *SAMPLE_FLAGS)
    assert result.returncode != 0
    assert "no checkpoint under" in result.stderr and str(tmp_path) in result.stderr
