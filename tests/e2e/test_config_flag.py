"""Every command's --config: a file that does not exist is one line naming it, not a
traceback."""

import subprocess
import sys
from pathlib import Path

import pytest

import sara_jax

REPO = Path(sara_jax.__file__).resolve().parents[1]


@pytest.mark.parametrize("command", ["main", "sample", "study", "convert", "preprocess"])
def test_a_missing_config_file_is_one_line_naming_it(command):
    result = subprocess.run(
        [sys.executable, "-m", f"sara_jax.{command}", "--config=configs/nope.py:sara"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2  # An input error (io/cli.run).
    # What absl and XLA log before anything starts is not the program's output.
    lines = [
        line
        for line in result.stderr.splitlines()
        if line and not line.startswith(("I0000", "WARNING: All log messages"))
    ]
    missing = f"--config=configs/nope.py:sara: no such file ({REPO / 'configs/nope.py'})"
    assert lines == [f"sara_jax.{command}: error: {missing}"]
