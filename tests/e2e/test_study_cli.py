"""The study command end to end: two arms (iREPA, and a probe that overrides a config field) as
ordinary runs with the shapes evaluator and the spatial metrics, outputs that parse, and a
second invocation that runs nothing new."""

import json
import os
import subprocess
import sys
from pathlib import Path

import sara_jax

REPO = Path(sara_jax.__file__).resolve().parents[1]
PROBE = "sara+loss.struc_weight=0.25"
SPATIAL = "spatial/h_den/lds"


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
        "--methods=irepa",
        "--seeds=0",
        f"--extra_arms={PROBE}@0",
        "--thresholds=class_acc:0.05",
        "--predict_steps=2",
        f"--metrics=fd,class_acc,{SPATIAL},struc_gap/z_den",
        *(f"--config.{k}={v}" for k, v in overrides.items()),
    ]
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=1"}
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)


def test_the_study_command_runs_its_arms_once_and_writes_parseable_outputs(tmp_path):
    first = run_study(tmp_path / "study", tmp_path / "cache")
    assert first.returncode == 0, first.stderr[-3000:]
    summary_dir = tmp_path / "study" / "summary"
    summary = json.loads((summary_dir / "study.json").read_text())
    assert set(summary["curves"]["fd"]) == {"irepa", PROBE}
    assert summary["curves"]["class_acc"][PROBE]["steps"] == [2, 4]
    for metric in (SPATIAL, "struc_gap/z_den"):
        assert summary["curves"][metric]["irepa"]["steps"] == [2, 4], metric
    # iREPA's arm ran with its conv projector and z-scored targets.
    arm = json.loads((tmp_path / "study" / "irepa" / "seed0" / "config.json").read_text())
    assert arm["projector"]["kind"] == "conv" and arm["loss"]["encoder_norm"] == "zscore"
    assert arm["loss"]["patch_weight"] == 1.0
    # Where each arm ran, in the summary and its table.
    assert set(summary["environments"]) == {"irepa/seed0", f"{PROBE}/seed0"}
    (start,) = summary["environments"]["irepa/seed0"]
    assert start["from_step"] == 0 and start["devices"] == 1
    # The probe's config, as the run logs it: the fields that differ from the defaults.
    assert any(
        line.startswith("  loss: ") and "struc_weight=0.25" in line
        for line in first.stderr.splitlines()
    )
    assert {r["method"] for r in summary["reach"]} == {"irepa", PROBE}
    assert summary["predictors"] == []  # Two arms are too few to rank.
    table = (summary_dir / "study.md").read_text()
    assert "### fd" in table and f"### {SPATIAL}" in table and "### Where the arms ran" in table
    assert (summary_dir / "fd.png").stat().st_size > 0
    assert (summary_dir / "spatial_h_den_lds.png").stat().st_size > 0
    # Each arm's last lines repeat its evaluations, after its final sample grid.
    last_arm = first.stderr[first.stderr.rindex("samples.png") :]
    assert "evaluation at step 2: fd" in last_arm and "evaluation at step 4: fd" in last_arm
    events = sorted((tmp_path / "study").glob("*/seed0/events.out.tfevents.*"))
    assert len(events) == 2

    second = run_study(tmp_path / "study", tmp_path / "cache")
    assert second.returncode == 0, second.stderr[-3000:]
    assert second.stderr.count("finished earlier, skipped") == 2
    assert sorted((tmp_path / "study").glob("*/seed0/events.out.tfevents.*")) == events
