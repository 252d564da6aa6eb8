"""`python -m sara_jax.plot` on the logs of a real (shrunken) training run."""

import shutil
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image
from test_main import run_main

from sara_jax import plot
from sara_jax.io.tensorboard import create_writer

TERMS = ["loss", "velocity", "patch", "struc", "adv", "disc_loss"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The workdir of a 4-step demo run logging every 2 steps (one device: the quickest)."""
    tmp = tmp_path_factory.mktemp("plot")
    result = run_main(tmp, "--config.train.num_steps=4", devices=1)
    assert result.returncode == 0, result.stderr[-3000:]
    return tmp / "run"


def write_scalars(workdir, values: dict[int, dict[str, float]]) -> None:
    """A new event file in `workdir` (named after the existing ones: newer) with `values`."""
    time.sleep(1.1)  # Event file names start with the creation second.
    writer = create_writer(workdir, just_logging=False)
    for step, scalars in values.items():
        writer.write_scalars(step, scalars)
    writer.close()


def test_reads_the_training_logs(trained):
    scalars = plot.read_scalars(str(trained))
    for term in TERMS:
        steps, values = scalars[term]
        np.testing.assert_array_equal(steps, [2, 4])
        assert np.all(np.isfinite(values))
    assert "samples" not in scalars  # Images are not scalars.


def test_plots_several_runs_with_fid(trained, tmp_path):
    sara, repa = tmp_path / "sara", tmp_path / "repa"
    shutil.copytree(trained, sara)
    shutil.copytree(trained, repa)
    # As a resumed run would: step 4 logged again, newer; and FID from the evaluation hook.
    write_scalars(repa, {2: {"fid": 80.0}, 4: {"fid": 60.0, "loss": 9.0}})
    scalars = plot.read_scalars(str(repa))
    np.testing.assert_array_equal(scalars["fid"][1], [80.0, 60.0])
    assert scalars["loss"][1][-1] == 9.0
    assert scalars["loss"][1][0] == plot.read_scalars(str(sara))["loss"][1][0]

    out = tmp_path / "plots"
    command = [sys.executable, "-m", "sara_jax.plot", f"--workdirs={sara},{repa}/"]
    command += ["--labels=SARA,REPA", f"--out={out}", "--smoothing=0.5"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    expected = {f"{m}.png" for m in [*TERMS, "fid"]} | {"curves.png"}
    assert {p.name for p in out.iterdir()} == expected
    for name in expected:
        with Image.open(out / name) as image:
            assert image.format == "PNG" and image.width >= 600 and image.height >= 400
