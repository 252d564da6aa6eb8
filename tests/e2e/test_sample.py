"""`python -m sara_jax.sample` on a tiny trained demo model: resumed = uninterrupted, whether
the first run was killed or stopped by SIGTERM, and with another batch size; other settings
draw another set."""

import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from test_main import SMALL, run_main

from sara_jax.io import files
from sara_jax.sampling import sample_set

SAMPLE_FLAGS = [
    "--config.sample.num_samples=20",
    "--config.sample.batch_size=8",
    "--config.sample.labels=balanced",
    "--config.sample.method=sde",
    "--config.sample.num_steps=3",
    "--config.sample.cfg_scale=1.5",
    "--config.sample.guidance_high=0.7",
]


def run_sample(tmp_path, *flags, devices: int = 8):
    # run_main's environment and SMALL config, but the sample module.
    return run_main(tmp_path, *flags, module="sara_jax.sample", devices=devices)


def the_set(workdir, prefix: str):
    """The one sample set directory of workdir/run named prefix_<digest>."""
    (out,) = (workdir / "run").glob(f"{prefix}_????????")
    return out


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("sample")
    result = run_main(workdir, "--config.train.num_steps=2", "--config.train.checkpoint_every=2")
    assert result.returncode == 0, result.stderr[-3000:]
    return workdir


@pytest.fixture(scope="module")
def drawn(trained):
    """SAMPLE_FLAGS' set, drawn in chunks of 8 on 8 devices: its directory and samples.npz."""
    result = run_sample(trained, *SAMPLE_FLAGS)
    assert result.returncode == 0, result.stderr[-3000:]
    out = the_set(trained, "samples_2_sde3_cfg1.5")
    assert f"drawing the sample set {out}: 3 cells of 8 samples, 3 of mine to draw" in result.stderr
    return out, files.read_npz(out / "samples.npz")


def test_a_set_continued_with_another_batch_size_is_the_uninterrupted_set(drawn, trained):
    out, full = drawn
    assert full["arr_0"].shape == (20, 32, 32, 3) and full["arr_0"].dtype == np.uint8
    np.testing.assert_array_equal(full["arr_1"], np.arange(20) % 10)
    assert (out / "grid.png").is_file()

    # A run killed after its first and last chunks, continued in cells of 12 on 4 devices: they
    # straddle the saved chunks, and only indices 8 to 15 are drawn, as two chunks.
    for name in ("chunk_0000008-0000016.npz", "samples.npz"):
        (out / name).unlink()
    result = run_sample(trained, *SAMPLE_FLAGS, "--config.sample.batch_size=12", devices=4)
    assert result.returncode == 0, result.stderr[-3000:]
    log = f"continuing the sample set {out}: 2 cells of 12 samples, 2 of mine to draw"
    assert log in result.stderr
    assert sorted(p.name for p in out.glob("chunk_*")) == [
        "chunk_0000000-0000008.npz", "chunk_0000008-0000012.npz",
        "chunk_0000012-0000016.npz", "chunk_0000016-0000020.npz",
    ]  # fmt: skip
    resumed = files.read_npz(out / "samples.npz")
    np.testing.assert_array_equal(resumed["arr_1"], np.arange(20) % 10)
    np.testing.assert_array_equal(resumed["arr_0"], full["arr_0"])

    record = sample_set.read_record(resumed, "samples.npz")
    settings = record["settings"]
    expected = {"step": 2, "sample.method": "sde", "sample.num_steps": 3, "sample.cfg_scale": 1.5}
    expected |= {"sample.guidance_high": 0.7, "sample.labels": "balanced", "sample.use_ema": True}
    assert {name: settings[name] for name in expected} == expected
    assert "sample.batch_size" not in settings and "sample.num_samples" not in settings
    assert record["num_samples"] == 20 and record["set"] == out.name
    assert [(c["start"], c["stop"], c["batch_size"]) for c in record["chunks"]] == [
        (0, 8, 8), (8, 12, 12), (12, 16, 12), (16, 20, 8)
    ]  # fmt: skip


def test_other_sampler_settings_draw_another_set_and_leave_the_first(drawn, trained):
    out, _ = drawn
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert not list((trained / "run").glob("samples_2_heun3_*"))  # Drawn afresh below.
    result = run_sample(
        trained, *SAMPLE_FLAGS, "--config.sample.cfg_scale=1.0", "--config.sample.method=heun"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    other = the_set(trained, "samples_2_heun3_cfg1")
    assert (
        f"drawing the sample set {other}: 3 cells of 8 samples, 3 of mine to draw" in result.stderr
    )
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    drawn_again = files.read_npz(other / "samples.npz")
    settings = sample_set.read_record(drawn_again, "samples.npz")["settings"]
    assert (settings["sample.method"], settings["sample.cfg_scale"]) == ("heun", 1.0)
    np.testing.assert_array_equal(drawn_again["arr_1"], np.arange(20) % 10)
    assert not np.array_equal(drawn_again["arr_0"], files.read_npz(out / "samples.npz")["arr_0"])


def test_an_earlier_step_is_sampled_on_request_as_it_was_then(drawn, trained, tmp_path):
    """--step=2 after training on to step 4: the set step 2 drew before, bit for bit (a
    curve's earlier points can be drawn after the run); a step not saved is one line."""
    out, full = drawn
    workdir = tmp_path / "later"
    shutil.copytree(trained / "run", workdir / "run")
    shutil.rmtree(workdir / "run" / out.name)
    resumed = run_main(workdir, "--config.train.num_steps=4", "--config.train.checkpoint_every=2")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    again = run_sample(workdir, *SAMPLE_FLAGS, "--step=2")
    assert again.returncode == 0, again.stderr[-3000:]
    assert the_set(workdir, "samples_2_sde3_cfg1.5").name == out.name
    redrawn = files.read_npz(workdir / "run" / out.name / "samples.npz")
    np.testing.assert_array_equal(redrawn["arr_0"], full["arr_0"])
    missing = run_sample(workdir, *SAMPLE_FLAGS, "--step=3")
    assert missing.returncode == 2
    assert "no checkpoint step 3 under" in missing.stderr.strip().splitlines()[-1]


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
    result = run_sample(trained, *SLOW_FLAGS)
    assert result.returncode == 0, result.stderr[-3000:]
    out = the_set(trained, "samples_2_euler1000_cfg4")  # configs/demo.py's method and guidance.
    full = np.load(out / "samples.npz")
    shutil.rmtree(out)

    run = start_sample(trained, *SLOW_FLAGS)
    start = time.time()
    while not (out / "chunk_0000000-0000008.npz").exists():
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
    assert f"sampling preempted: 1 of the 3 cells saved in {out}" in lines[0]
    # Cell 1 was being drawn: abandoned, not finished.
    assert sorted(p.name for p in out.iterdir()) == ["chunk_0000000-0000008.npz", "set.json"]

    result = run_sample(trained, *SLOW_FLAGS)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "3 cells of 8 samples, 2 of mine to draw" in result.stderr
    resumed = np.load(out / "samples.npz")
    np.testing.assert_array_equal(resumed["arr_0"], full["arr_0"])
    np.testing.assert_array_equal(resumed["arr_1"], full["arr_1"])
