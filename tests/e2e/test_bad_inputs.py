"""Every input error of every command is one line naming the bad thing, with exit status 2 and
no traceback (`io/cli.run`): unknown config fields, values a rule refuses, bad files.

Each row is one subprocess (a few seconds, mostly imports); all are refused before any work
starts, so none compiles or trains."""

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import sara_jax

REPO = Path(sara_jax.__file__).resolve().parents[1]

# (command, its arguments with {tmp} for the files made below, what the one line must say)
BAD_INPUTS = [
    # Config overrides: every command with --config parses them the same way.
    ("main", "--config.train.batch_size=4", "--config.train.batch_size: config.train has no"),
    ("main", "--config.nonexistent=1", "config has no section or field 'nonexistent'"),
    ("main", "--config.optim.lr=abc", "--config.optim.lr=abc: config.optim.lr takes a float"),
    ("main", "--config.optim.lr=-1", "config.optim.lr must be > 0, got -1.0"),
    ("main", "--config=configs/nope.py:sara", "--config=configs/nope.py:sara: no such file"),
    ("sample", "--config.sample.labels=foo", "config.sample.labels must be"),
    ("preprocess", "--config.data.image_size=abc", "config.data.image_size takes an int"),
    ("analysis", "--config.train.state_sharding=foo", "config.train.state_sharding must be"),
    ("study", "--methods=foo", "unknown alignment terms ['foo']"),
    ("study", "--methods=sara+loss.beta=1", "no config field 'loss.beta'"),
    ("convert", "--config.encoder.checkpoint={tmp}/nope", "checkpoint='{tmp}/nope': no such"),
    # Data that is not there.
    (
        "preprocess",
        "--config.preprocess.path={tmp}/noimagenet --config.data.dir={tmp}/out",
        "ImageNet folder '{tmp}/noimagenet' does not exist",
    ),
    # Files given to evaluate.
    ("evaluate", "--samples={tmp}/missing.npz", "--samples='{tmp}/missing.npz': no such file"),
    ("evaluate", "--samples={tmp}/float.npz", "--samples={tmp}/float.npz: arr_0 is float32"),
    ("evaluate", "--samples={tmp}/pickled.npz", "{tmp}/pickled.npz: arr_0 holds pickled Python"),
    ("evaluate", "--samples={tmp}/single.npy", "--samples={tmp}/single.npy is a single .npy"),
    ("evaluate", "--samples={tmp}/bare.npz", "--samples={tmp}/bare.npz: no record of the"),
    ("evaluate", "--unrecorded --reference={tmp}/ref.npz", "reference batch not found: {tmp}/ref"),
    ("evaluate", "--bogus=1", "Unknown command line flag 'bogus'"),
    # Directories given to plot.
    ("plot", "--workdirs={tmp}/nowork", "no TensorBoard event files in {tmp}/nowork"),
    ("plot", "--workdirs={tmp}/a,{tmp}/b --labels=x", "--labels has 1 names for 2 --workdirs"),
]

# What each command needs besides the bad input, so that the bad input is all that is wrong.
REQUIRED = {
    "main": ["--config=configs/demo.py", "--workdir={tmp}/run"],
    "sample": ["--config=configs/demo.py", "--workdir={tmp}/run"],
    "preprocess": ["--config=configs/demo.py"],
    "analysis": ["--config=configs/demo.py", "--workdir={tmp}/run", "--out={tmp}/fig"],
    "study": ["--config=configs/shapes_study.py", "--workdir={tmp}/study", "--seeds=0"],
    "convert": ["--config=configs/sit_b.py", "--out={tmp}/out"],
    "evaluate": ["--samples={tmp}/bare.npz", "--metrics=inception"],
    "plot": ["--out={tmp}/plots"],
}

# What C++ code logs as it loads, before absl's log is set up (XLA's; TensorFlow's, which plot's
# event reader imports), is not the program's output: its lines are stamped with time 0.
NOT_OURS = re.compile(r"WARNING: All log messages before absl::InitializeLog|[IWE]0000 00:00:")


@pytest.fixture(scope="module")
def tmp(tmp_path_factory) -> Path:
    """The bad files of the table."""
    tmp = tmp_path_factory.mktemp("bad_inputs")
    images = np.zeros((2, 8, 8, 3), np.uint8)
    np.savez(tmp / "float.npz", arr_0=images.astype(np.float32))
    np.savez(tmp / "pickled.npz", arr_0=np.array([{"a": 1}], dtype=object))
    np.save(tmp / "single.npy", images)
    np.savez(tmp / "bare.npz", arr_0=images)  # Images, but not the record sample writes.
    return tmp


@pytest.mark.parametrize(
    "command, args, expected", BAD_INPUTS, ids=[f"{c} {a}" for c, a, _ in BAD_INPUTS]
)
def test_a_bad_input_is_one_line_naming_it(tmp, command, args, expected):
    """Exit status 2 and one line on stderr, `sara_jax.<command>: error: ...`, that names the
    bad field, value or file."""
    bad = args.format(tmp=tmp).split()
    given = {arg.partition("=")[0] for arg in bad}
    others = [a.format(tmp=tmp) for a in REQUIRED[command] if a.partition("=")[0] not in given]
    result = subprocess.run(
        [sys.executable, "-m", f"sara_jax.{command}", *others, *bad],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1"),
    )
    lines = [line for line in result.stderr.splitlines() if line and not NOT_OURS.match(line)]
    assert result.returncode == 2, result.stderr[-3000:]
    assert len(lines) == 1, result.stderr[-3000:]
    assert lines[0].startswith(f"sara_jax.{command}: error: "), lines[0]
    assert expected.format(tmp=tmp) in lines[0], lines[0]


def test_training_on_records_that_are_not_there_ends_with_one_error_line(tmp):
    """Found once the run has started (after its device line): the error is still one line,
    exit status 2, no traceback."""
    args = ["--config.data.source=records", f"--config.data.dir={tmp}/nodata"]
    result = subprocess.run(
        [sys.executable, "-m", "sara_jax.main", "--config=configs/demo.py", f"--workdir={tmp}/r",
         "--config.eval.every=0", *args],
        cwd=REPO, capture_output=True, text=True, timeout=300,
        env=dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1"),
    )  # fmt: skip
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-3000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last == (
        f"sara_jax.main: error: config.data.dir='{tmp}/nodata': no such directory ({tmp}/nodata)"
    )
