"""Preemption and exact resume through the real CLI (subprocesses on 8 CPU devices)."""

import os
import re
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
from test_main import SMALL


def command(workdir, cache, *flags):
    return [
        sys.executable, "-m", "sara_jax.main", f"--workdir={workdir}", *SMALL,
        f"--config.encoder.pretrain.cache_dir={cache}", "--config.train.log_every=1",
        "--config.train.checkpoint_every=2", *flags,
    ]  # fmt: skip


ENV = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8")


def losses_by_step(log: str) -> dict[int, str]:
    """The logged `loss=` value of every step, as printed (six significant digits)."""
    return {int(m[1]): m[2] for m in re.finditer(r"\] \[(\d+)\] adv=.*? loss=([-\d.e]+)", log)}


def wait_for(path, process, timeout=300):
    start = time.time()
    while not path.exists():
        assert process.poll() is None, process.stderr.read()[-3000:]
        assert time.time() - start < timeout, f"{path} never appeared"
        time.sleep(0.2)


def restore_state(checkpoint_dir):
    return ocp.StandardCheckpointer().restore((checkpoint_dir / "state").absolute())


def test_sigkill_mid_run_then_restart_reproduces_the_uninterrupted_run(tmp_path):
    cache = tmp_path / "cache"
    flags = ["--config.train.num_steps=7"]
    straight = subprocess.run(
        command(tmp_path / "a", cache, *flags), capture_output=True, text=True, env=ENV,
        timeout=600,
    )  # fmt: skip
    assert straight.returncode == 0, straight.stderr[-3000:]

    killed = subprocess.Popen(
        command(tmp_path / "b", cache, *flags), stderr=subprocess.PIPE, text=True, env=ENV
    )
    wait_for(tmp_path / "b" / "checkpoints" / "2", killed)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    resumed = subprocess.run(
        command(tmp_path / "b", cache, *flags), capture_output=True, text=True, env=ENV,
        timeout=600,
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    start = int(re.search(r"resumed from step (\d+)", resumed.stderr)[1])
    assert start in (2, 4, 6)

    expected, got = losses_by_step(straight.stderr), losses_by_step(resumed.stderr)
    assert sorted(got) == list(range(start + 1, 8))
    assert all(got[s] == expected[s] for s in got), (got, expected)
    a = restore_state(tmp_path / "a" / "checkpoints" / "7")
    b = restore_state(tmp_path / "b" / "checkpoints" / "7")
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(x, y)  # bitwise


def test_sigterm_saves_a_checkpoint_and_exits_cleanly(tmp_path):
    run = subprocess.Popen(
        command(tmp_path / "run", tmp_path / "cache", "--config.train.num_steps=100000"),
        stderr=subprocess.PIPE, text=True, env=ENV,
    )  # fmt: skip
    wait_for(tmp_path / "run" / "checkpoints" / "2", run)
    run.send_signal(signal.SIGTERM)
    _, stderr = run.communicate(timeout=300)
    assert run.returncode == 0, stderr[-3000:]
    saved = int(re.search(r"training preempted: saved step (\d+)", stderr)[1])
    assert (tmp_path / "run" / "checkpoints" / str(saved)).is_dir()
    assert int(restore_state(tmp_path / "run" / "checkpoints" / str(saved))["step"]) == saved


def flip_bytes(step_dir) -> None:
    """Flips 16 bytes in the middle of the step's largest array file, its size unchanged."""
    target = max((step_dir / "state").rglob("*"), key=lambda p: p.stat().st_size)
    data = bytearray(target.read_bytes())
    middle = slice(len(data) // 2, len(data) // 2 + 16)
    data[middle] = bytes(b ^ 0xFF for b in data[middle])
    target.write_bytes(bytes(data))


def test_a_corrupt_latest_checkpoint_is_named_and_training_resumes_from_the_previous(tmp_path):
    cache, workdir = tmp_path / "cache", tmp_path / "run"
    first = subprocess.run(
        command(workdir, cache, "--config.train.num_steps=4"), capture_output=True, text=True,
        env=ENV, timeout=600,
    )  # fmt: skip
    assert first.returncode == 0, first.stderr[-3000:]
    flip_bytes(workdir / "checkpoints" / "4")

    again = subprocess.run(
        command(workdir, cache, "--config.train.num_steps=6"), capture_output=True, text=True,
        env=ENV, timeout=600,
    )  # fmt: skip
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"checkpoint {workdir / 'checkpoints' / '4'} is bad" in again.stderr
    assert "resumed from step 2" in again.stderr
    assert (workdir / "corrupt_checkpoints" / "4" / "state").is_dir()  # Kept, not deleted.
    expected, got = losses_by_step(first.stderr), losses_by_step(again.stderr)
    assert sorted(got) == [3, 4, 5, 6] and got[3] == expected[3] and got[4] == expected[4]


def test_a_run_whose_every_step_is_corrupt_is_not_restarted_without_start_afresh(tmp_path):
    cache, workdir = tmp_path / "cache", tmp_path / "run"
    run = lambda *flags: subprocess.run(  # noqa: E731
        command(workdir, cache, "--config.train.num_steps=4", *flags), capture_output=True,
        text=True, env=ENV, timeout=600,
    )  # fmt: skip
    assert run().returncode == 0
    for step in ("2", "4"):
        flip_bytes(workdir / "checkpoints" / step)
    first = run()
    assert first.returncode == 2 and "sara_jax.main: error: no good checkpoint" in first.stderr
    assert "Traceback" not in first.stderr
    assert sorted(p.name for p in (workdir / "corrupt_checkpoints").iterdir()) == ["2", "4"]
    # As a scheduler restarting the job would: refused again, nothing trained.
    again = run()
    assert again.returncode == 2 and "Traceback" not in again.stderr
    assert (
        f"--workdir={workdir} holds a previous run (config.json, corrupt_checkpoints, "
        "events.out.tfevents." in again.stderr
    )
    assert "--start_afresh" in again.stderr and not losses_by_step(again.stderr)
    assert not list((workdir / "checkpoints").iterdir())

    afresh = run("--start_afresh")
    assert afresh.returncode == 0, afresh.stderr[-3000:]
    assert f"starting afresh from step 0 in {workdir}" in afresh.stderr
    assert sorted(losses_by_step(afresh.stderr)) == [1, 2, 3, 4]
    assert sorted(p.name for p in (workdir / "corrupt_checkpoints").iterdir()) == ["2", "4"]


# What orbax's abandoned reads of a bad step print, by the two routes `quiet_abandoned_reads`
# diverts: sys.unraisablehook, and asyncio's logger while its loop is still open.
NOISE = ("Exception ignored", "Event loop is closed", "exception was never retrieved")


def test_a_truncated_latest_step_costs_three_lines_and_the_run_resumes(tmp_path):
    cache, workdir = tmp_path / "cache", tmp_path / "run"
    run = lambda steps: subprocess.run(  # noqa: E731
        command(workdir, cache, f"--config.train.num_steps={steps}"), capture_output=True,
        text=True, env=ENV, timeout=600,
    )  # fmt: skip
    assert run(4).returncode == 0
    target = max(
        (workdir / "checkpoints" / "4" / "state").rglob("*"), key=lambda p: p.stat().st_size
    )
    os.truncate(target, target.stat().st_size // 2)
    # Sampling skips the bad step and leaves it in place; orbax's dying reads stay out of the log.
    sample = command(workdir, cache, "--config.sample.num_samples=8")
    sample[sample.index("sara_jax.main")] = "sara_jax.sample"
    sampled = subprocess.run(sample, capture_output=True, text=True, env=ENV, timeout=600)
    assert sampled.returncode == 0, sampled.stderr[-3000:]
    assert "using step 2, the newest good one" in sampled.stderr, sampled.stderr[-3000:]
    lines = sampled.stderr.splitlines()
    noise = [x for x in lines if any(n in x for n in NOISE)]
    assert not noise and len(lines) < 60, (len(lines), noise[:5], sampled.stderr[:3000])
    assert (workdir / "checkpoints" / "4").is_dir()
    again = run(6)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resumed from step 2" in again.stderr
    fault = [line for line in again.stderr.splitlines() if "checkpoints.py:" in line]
    # Which step and why, where it went, which step is used.
    assert len(fault) == 3, fault
    assert f"checkpoint {workdir / 'checkpoints' / '4'} is bad: unreadable" in fault[0]
    assert "moved bad checkpoint" in fault[1] and "newest good one" in fault[2]
    lines = again.stderr.splitlines()
    noise = [x for x in lines if any(n in x for n in NOISE)]
    assert not noise and len(lines) < 60, (len(lines), noise[:5], again.stderr[:3000])
