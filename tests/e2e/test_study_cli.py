"""The study command end to end: two arms (one a probe that overrides a config field) as
ordinary runs with the shapes evaluator, outputs that parse, and a second invocation that runs
nothing new."""

import json
import os
import subprocess
import sys
from pathlib import Path

import sara_jax

REPO = Path(sara_jax.__file__).resolve().parents[1]
PROBE = "sara+loss.struc_weight=0.25"


def run_study(workdir: Path, cache: Path) -> subprocess.CompletedProcess:
    overrides = {
        "train.num_steps": 4,
        "train.checkpoint_every": 4,
        "train.log_every": 2,
        "data.num_examples": 640,
        "data.global_batch_size": 16,
        "model.depth": 2,
        "encoder.pretrain.steps": 2,
        "encoder.pretrain.num_examples": 64,
        "encoder.pretrain.batch_size": 32,
        "encoder.pretrain.cache_dir": str(cache),
        "eval.every": 2,
        "eval.featurizer": "shapes",
        "eval.num_samples": 16,
        "eval.num_steps": 2,
        "eval.shapes.steps": 4,
        "eval.shapes.num_train": 64,
        "eval.shapes.num_test": 32,
        "eval.shapes.batch_size": 32,
        "eval.shapes.cache_dir": str(cache),
        "sample.batch_size": 8,
        "sample.num_steps": 2,
        "sample.per_class": 2,
    }
    command = [
        sys.executable,
        "-m",
        "sara_jax.study",
        "--config=configs/demo.py",
        f"--workdir={workdir}",
        "--methods=none",
        "--seeds=0",
        f"--extra_arms={PROBE}@0",
        "--thresholds=class_acc:0.05",
        *(f"--config.{k}={v}" for k, v in overrides.items()),
    ]
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=1"}
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)


def test_the_study_command_runs_its_arms_once_and_writes_parseable_outputs(tmp_path):
    first = run_study(tmp_path / "study", tmp_path / "cache")
    assert first.returncode == 0, first.stderr[-3000:]
    summary_dir = tmp_path / "study" / "summary"
    summary = json.loads((summary_dir / "study.json").read_text())
    assert set(summary["curves"]["fd"]) == {"none", PROBE}
    assert summary["curves"]["class_acc"][PROBE]["steps"] == [2, 4]
    # The probe's config, as the run logs it: the fields that differ from the defaults.
    assert any(
        line.startswith("  loss: ") and "struc_weight=0.25" in line
        for line in first.stderr.splitlines()
    )
    assert {r["method"] for r in summary["reach"]} == {"none", PROBE}
    assert "### fd" in (summary_dir / "study.md").read_text()
    assert (summary_dir / "fd.png").stat().st_size > 0
    # Each arm's last lines repeat its evaluations, after its final sample grid.
    last_arm = first.stderr[first.stderr.rindex("samples.png") :]
    assert "evaluation at step 2: fd" in last_arm and "evaluation at step 4: fd" in last_arm
    events = sorted((tmp_path / "study").glob("*/seed0/events.out.tfevents.*"))
    assert len(events) == 2

    second = run_study(tmp_path / "study", tmp_path / "cache")
    assert second.returncode == 0, second.stderr[-3000:]
    assert second.stderr.count("finished earlier, skipped") == 2
    assert sorted((tmp_path / "study").glob("*/seed0/events.out.tfevents.*")) == events
