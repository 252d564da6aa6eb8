"""`python -m sara_jax.evaluate` on sample sets of the shapes data: a set drawn by
`python -m sara_jax.sample` with the in-training evaluation's settings scores what the run
logged; a set without its record is refused."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from test_main import run_main

from sara_jax.io.events import read_scalars

# The in-training evaluation at step 2: 16 samples of 2 Euler steps, the shapes evaluator,
# drawn 6 at a time on 8 devices (as the study's 250 on a v5e-8: padded, not refused).
EVAL = [
    "--config.train.num_steps=2",
    "--config.train.checkpoint_every=2",
    "--config.eval.every=2",
    "--config.eval.featurizer=shapes",
    "--config.eval.num_samples=16",
    "--config.eval.num_steps=2",
    "--config.eval.shapes.steps=4",
    "--config.eval.shapes.num_train=64",
    "--config.eval.shapes.num_test=32",
    "--config.eval.shapes.batch_size=32",
    "--config.sample.batch_size=6",
]


def run_evaluate(*flags: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "sara_jax.evaluate", *flags],
        capture_output=True,
        text=True,
        env=dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8"),
        timeout=600,
    )


@pytest.fixture(scope="module")
def drawn(tmp_path_factory):
    """(workdir, samples.npz) of a trained tiny run and the set its evaluation drew."""
    workdir = tmp_path_factory.mktemp("evaluate_sets")
    cache = f"--config.eval.shapes.cache_dir={workdir / 'cache'}"
    result = run_main(workdir, *EVAL, cache)
    assert result.returncode == 0, result.stderr[-3000:]
    # The same samples: eval.num_samples of eval.num_steps steps, the sample job's seed.
    flags = ["--config.sample.num_samples=16", "--config.sample.num_steps=2"]
    result = run_main(workdir, *EVAL, cache, *flags, module="sara_jax.sample")
    assert result.returncode == 0, result.stderr[-3000:]
    (path,) = (workdir / "run").glob("samples_2_*/samples.npz")
    return workdir, path


def test_a_shapes_set_scores_what_the_run_logged(drawn):
    workdir, path = drawn
    result = run_evaluate(f"--samples={path}", "--metrics=shapes")
    assert result.returncode == 0, result.stderr[-3000:]
    written = json.loads((path.parent / "metrics.json").read_text())
    logged = read_scalars(str(workdir / "run"))
    for name in ("fd", "class_acc"):
        steps, values = logged[name]
        assert steps.tolist() == [2]
        np.testing.assert_allclose(written[name], values[0], rtol=1e-5, err_msg=name)
        assert f"{name}: " in result.stdout
    assert written["set"]["set"] == path.parent.name
    assert written["set"]["settings"]["sample.num_steps"] == 2


def test_a_set_without_its_record_is_refused(drawn, tmp_path):
    _, path = drawn
    arrays = dict(np.load(path))
    del arrays["record"]
    bare = tmp_path / "bare.npz"
    np.savez(bare, **arrays)
    result = run_evaluate(f"--samples={bare}", "--metrics=shapes")
    assert result.returncode != 0
    assert f"--samples={bare}: no record of the settings that drew its samples" in result.stderr
    assert "--unrecorded scores a set drawn elsewhere" in result.stderr


def test_scores_logged_at_the_sets_step_join_the_runs_curves(drawn, tmp_path):
    workdir, path = drawn
    result = run_evaluate(
        f"--samples={path}", "--metrics=shapes", "--log_scalars", f"--out={tmp_path / 'm.json'}"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    logged = read_scalars(str(workdir / "run"))  # The study and plot read curves this way.
    for name in ("fd", "class_acc"):
        steps, values = logged[f"evaluate/{name}"]
        assert steps.tolist() == [2]
        np.testing.assert_allclose(values, logged[name][1], rtol=1e-5, err_msg=name)

    # Another set of the run, other settings, its scores logged: this one's are refused.
    other = path.parent.with_name("samples_2_euler3_other")
    other.mkdir()
    try:
        record = json.loads((path.parent / "set.json").read_text())
        record["settings"]["sample.num_steps"] = 3
        (other / "set.json").write_text(json.dumps(record))
        (events,) = path.parent.glob("events.out.tfevents.*")
        (other / events.name).write_bytes(events.read_bytes())
        result = run_evaluate(f"--samples={path}", "--metrics=shapes", "--log_scalars")
        assert result.returncode == 2, result.stderr[-3000:]
        assert (
            f"--log_scalars: {other} holds evaluate/ scalars of a set with sample.num_steps=3, "
            "this set has 2; one curve is of one set's settings"
        ) in result.stderr.strip().splitlines()[-1]
    finally:
        shutil.rmtree(other)
