"""`python -m sara_jax.sample` on a tiny trained demo model: resumed = uninterrupted, whether
the first run was killed or stopped by SIGTERM."""

import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from test_main import SMALL, run_main

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


# Three chunks of ~2 s each on two CPU cores, against ~0.1 s from SIGTERM to exit: the run is
# in the middle of chunk 1 when chunk 0 appears.
SLOW_FLAGS = [
    "--config.sample.num_samples=24",
    "--config.sample.batch_size=8",
    "--config.sample.labels=balanced",
    "--config.sample.num_steps=1000",
]


def start_sample(workdir, *flags) -> subprocess.Popen:
    # run_main's command, started in the background.
    return subprocess.Popen(
        [
            sys.executable, "-m", "sara_jax.sample", f"--workdir={workdir / 'run'}", *SMALL,
            f"--config.encoder.pretrain.cache_dir={workdir / 'cache'}", *flags,
        ],
        stderr=subprocess.PIPE, text=True,
        env=dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8"),
    )  # fmt: skip


def test_sigterm_keeps_the_saved_chunks_and_the_rerun_completes_the_set(trained):
    out = trained / "run" / "samples_2"
    shutil.rmtree(out, ignore_errors=True)  # The other test's chunks were drawn with other flags.
    result = run_sample(trained, *SLOW_FLAGS)
    assert result.returncode == 0, result.stderr[-3000:]
    full = np.load(out / "samples.npz")
    shutil.rmtree(out)

    run = start_sample(trained, *SLOW_FLAGS)
    start = time.time()
    while not (out / "chunk_000000.npz").exists():
        assert run.poll() is None, run.stderr.read()[-3000:]
        assert time.time() - start < 300, "chunk 0 never appeared"
        time.sleep(0.05)
    run.send_signal(signal.SIGTERM)
    sent = time.time()
    _, stderr = run.communicate(timeout=60)
    stopped = time.time() - sent
    assert run.returncode == 0, stderr[-3000:]
    assert stopped < 5, f"took {stopped:.1f} s to stop"
    lines = [line for line in stderr.splitlines() if "preempted" in line]
    assert len(lines) == 1 and lines[0].startswith("W"), lines
    assert f"sampling preempted: 1 of the 3 chunks saved in {out}" in lines[0]
    # Chunk 1 was being drawn: abandoned, not finished.
    assert sorted(p.name for p in out.iterdir()) == ["chunk_000000.npz"]

    result = run_sample(trained, *SLOW_FLAGS)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "3 chunks, 2 of mine to draw" in result.stderr
    resumed = np.load(out / "samples.npz")
    np.testing.assert_array_equal(resumed["arr_0"], full["arr_0"])
    np.testing.assert_array_equal(resumed["arr_1"], full["arr_1"])
