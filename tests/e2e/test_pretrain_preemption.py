"""SIGTERM while `python -m sara_jax.main` pretrains the demo encoder: exit status 0 within
seconds and one warning line, nothing cached; the rerun pretrains from the start, caches exactly
what an uninterrupted pretraining does, and trains. (The shapes evaluator's training stops the
same way, in the same `fit_classifier`: e2e/test_shapes_evaluator.py.)"""

import re
import signal
import subprocess
import sys
import threading
import time

from helpers import tiny_config, tiny_flags

from sara_jax.data.shapes import ShapesSource
from sara_jax.encoders.pretrain import pretrained_demo_vit

# A pretraining long enough (200 steps, a progress line every 40) for SIGTERM to land inside
# it, then one training step; no evaluation.
OVERRIDES = {
    "encoder.pretrain.steps": 200,
    "encoder.pretrain.num_examples": 64,
    "encoder.pretrain.batch_size": 32,
    "data.num_examples": 640,
    "data.global_batch_size": 16,
    "train.num_steps": 1,
    "eval.every": 0,
    "sample.num_steps": 2,
    "sample.per_class": 1,
}


def command(tmp_path) -> list[str]:
    caches = {
        "encoder.pretrain.cache_dir": tmp_path / "cache",
        "eval.shapes.cache_dir": tmp_path / "cache",
    }
    flags = tiny_flags(**OVERRIDES, **caches)
    return [sys.executable, "-m", "sara_jax.main", f"--workdir={tmp_path / 'run'}", *flags]


def sigterm_after(tmp_path, line: str) -> tuple[int, float, str]:
    """Runs main, sends SIGTERM once a stderr line contains `line`; (exit status, seconds from
    SIGTERM to exit, stderr)."""
    run = subprocess.Popen(command(tmp_path), stderr=subprocess.PIPE, text=True)
    lines, seen = [], threading.Event()

    def read() -> None:
        for text in run.stderr:
            lines.append(text)
            if line in text:
                seen.set()

    reader = threading.Thread(target=read)
    reader.start()
    try:
        assert seen.wait(timeout=300), "".join(lines)[-3000:]
        run.send_signal(signal.SIGTERM)
        sent = time.monotonic()
        status = run.wait(timeout=60)
        seconds = time.monotonic() - sent
    finally:
        run.kill()
        reader.join()
    return status, seconds, "".join(lines)


def test_sigterm_during_pretraining_exits_cleanly_and_the_rerun_caches_the_same(tmp_path):
    status, seconds, log = sigterm_after(tmp_path, "demo encoder pretraining step 40/200")
    assert status == 0 and seconds < 10, (status, seconds, log[-3000:])
    warnings = [line.split("] ", 1)[1] for line in log.splitlines() if "preempted:" in line]
    assert len(warnings) == 1 and re.fullmatch(
        r"training preempted: demo encoder pretraining stopped at step \d+/200; nothing is "
        r"cached yet, so the rerun starts it again; rerun the same command to continue",
        warnings[0],
    ), warnings
    assert "Traceback" not in log and not (tmp_path / "cache").exists()

    rerun = subprocess.run(command(tmp_path), capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "demo encoder: pretraining (cached afterwards at" in rerun.stderr
    assert "demo encoder pretraining step 200/200" in rerun.stderr
    assert (tmp_path / "run" / "samples.png").is_file()  # It trained and sampled.

    # What an uninterrupted pretraining of the same config caches, byte for byte.
    config = tiny_config(OVERRIDES, **{"encoder.pretrain.cache_dir": str(tmp_path / "ref")})
    pretrained_demo_vit(config, ShapesSource(640, 32, 10, seed=config.data.seed))
    (cached,) = (tmp_path / "cache").iterdir()
    (reference,) = (tmp_path / "ref").iterdir()
    assert cached.name == reference.name  # The same config, by its cache key.
    assert cached.read_bytes() == reference.read_bytes()
