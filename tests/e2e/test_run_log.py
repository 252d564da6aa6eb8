"""What a user sees of a run: a short, informative log, TensorBoard files written without
TensorFlow, and a finished run that says so instead of running again."""

import os
import re
import subprocess
import sys

from test_main import SMALL

from sara_jax.io.events import read_scalars

# sara_jax.main as `python -m` runs it, then whether TensorFlow was ever imported.
MAIN_THEN_REPORT = """
import runpy, sys
sys.argv = ["sara_jax.main", *sys.argv[1:]]
try:
    runpy.run_module("sara_jax.main", run_name="__main__")
except SystemExit as exit:
    assert not exit.code, exit.code
print("tensorflow imported:", "tensorflow" in sys.modules)
"""


def run(tmp_path, *flags):
    return subprocess.run(
        [
            sys.executable, "-c", MAIN_THEN_REPORT, f"--workdir={tmp_path / 'run'}", *SMALL,
            f"--config.encoder.pretrain.cache_dir={tmp_path / 'cache'}",
            "--config.train.num_steps=4", "--config.train.sample_every=0", *flags,
        ],
        capture_output=True, text=True, timeout=900,
        env=dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2"),
    )  # fmt: skip


def test_a_short_run_logs_what_matters_and_a_finished_one_stops_at_once(tmp_path):
    first = run(tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "tensorflow imported: False" in first.stdout
    log = first.stderr
    # The config as a diff against the defaults, the whole of it in the workdir.
    assert "config: the defaults but" in log and "  train: " in log and "num_steps=4" in log
    assert (tmp_path / "run" / "config.json").is_file()
    assert "compiling the training step" in log and "compiled; the first step took" in log
    assert "parameters: SiT " in log and ", discriminator " in log
    assert re.search(r"step [1-4]/4 \(\d+\.\d%\): .* steps/s, .* images/s, ETA 0:00:\d\d", log)
    # Third-party INFO lines (orbax logs dozens per checkpoint) stay out of the default log.
    infos = [line for line in log.splitlines() if line.startswith("I1") or line.startswith("I0")]
    assert not [line for line in infos if "checkpoint_manager.py" in line or "orbax" in line]
    assert len(log.splitlines()) < 60, log

    scalars = read_scalars(str(tmp_path / "run"))  # TensorBoard's own reader.
    steps, losses = scalars["loss"]
    assert list(steps) == [2, 4] and all(losses > 0)
    events = sorted((tmp_path / "run").glob("events.out.tfevents.*"))
    samples = tmp_path / "run" / "samples.png"
    drawn = samples.stat().st_mtime_ns

    again = run(tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "is complete: step 4, train.num_steps=4; nothing to do" in again.stderr
    assert "compiling" not in again.stderr
    assert sorted((tmp_path / "run").glob("events.out.tfevents.*")) == events
    assert samples.stat().st_mtime_ns == drawn
