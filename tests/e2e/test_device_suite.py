"""benchmarks/device_suite.sh --smoke: the GPU suite's sequence on tiny configs, as the device
tool runs it (files into $OUT), with one step made to fail and one to run out of time."""

import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TRAIN = ["sit_xl", "sit_xl_profile", "sit_b", "sit_l", "sit_xl_accum2", "sit_xl_layouts"]
SAMPLE = {"sample_xl_sde": 1.0, "sample_xl_sde_cfg": 1.35, "sample_xl_sde_interval": 1.8}


def test_smoke_suite_writes_every_figure_and_survives_a_failed_step(tmp_path):
    out = tmp_path / "out"
    # One CPU device, not conftest's 8: the smoke batch of 8 in 2 micro-batches.
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env |= {"OUT": str(out), "PYTHON": sys.executable}
    proc = subprocess.run(
        [
            *("bash", "benchmarks/device_suite.sh", "--smoke"),
            *("--extra", "sit_l=--no_such_flag"),  # Fails at once.
            *("--box", "sample_xl_sde_interval=1"),  # Runs out of time.
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]

    # What comes back from the device tool: at most 8 plain files, plainly named.
    files = sorted(p.name for p in out.iterdir())
    assert files == [
        "smoke_results.tar.gz",
        "smoke_sit_xl_profile.perfetto_trace.json.gz",
        "smoke_suite.json",
        "smoke_suite.log",
        "smoke_suite.txt",
    ]
    assert all(re.fullmatch(r"[A-Za-z0-9._-]+", name) for name in files)

    suite = json.loads((out / "smoke_suite.json").read_text())
    assert suite["smoke"] and suite["device"]["platform"] == "cpu"
    status = {s["name"]: s["status"] for s in suite["steps"]}
    assert list(status) == [
        *("sit_xl", "sample_xl_sde", "sample_xl_sde_cfg", "sit_xl_profile"),
        *("sit_b", "sit_l", "sit_xl_accum2", "sample_xl_sde_interval", "sit_xl_layouts"),
    ]
    assert status.pop("sit_l") == "FAILED (exit 1)"
    assert status.pop("sample_xl_sde_interval").startswith("TIMEOUT at 1 s")
    assert set(status.values()) == {"ok"}, (status, proc.stdout[-5000:])

    with tarfile.open(out / "smoke_results.tar.gz") as tar:
        tar.extractall(tmp_path / "json", filter="data")
    extracted = list((tmp_path / "json").iterdir())
    assert all(p.name.startswith("smoke_") for p in extracted)  # benchmarks/results' naming
    reports = {p.stem.removeprefix("smoke_"): json.loads(p.read_text()) for p in extracted}
    assert set(reports) == {*TRAIN, *SAMPLE} - {"sit_l", "sample_xl_sde_interval"}
    steps = {s["name"]: s for s in suite["steps"]}
    for name, report in reports.items():
        assert steps[name]["report"] == report and steps[name]["json"] == f"smoke_{name}.json"
        if name in SAMPLE:
            assert report["method"] == "sde" and report["cfg_scale"] == SAMPLE[name]
            assert report["images_per_sec"] > 0
            continue
        modes = {
            "sit_xl_profile": ["sara"],
            "sit_xl_layouts": ["sara/replicated", "sara/weight_update"],
        }.get(name, ["sit", "repa", "sara"])
        assert list(report["results"]) == modes, name
        assert all(r["step_ms"] > 0 for r in report["results"].values())
    assert reports["sit_xl_accum2"]["config_overrides"]["train.grad_accum_steps"] == 2
    assert reports["sit_xl_profile"]["results"]["sara"]["profile"]["by_component"]
    assert set(reports["sit_xl"]["overheads"]) == {"repa_over_sit", "sara_over_repa"}
    assert set(reports["sit_xl_layouts"]["layout_ratios"]) == {"sara/weight_update_over_replicated"}

    summary = (out / "smoke_suite.txt").read_text()
    assert summary in proc.stdout
    for part in ("Training step", "Sampling", "Profile, sit_xl_profile sara", "Targets"):
        assert part in summary, part
    assert "no_such_flag" in (out / "smoke_suite.log").read_text()


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck not installed")
@pytest.mark.parametrize("script", ["device_suite.sh", "device_wheels.sh"])
def test_shellcheck(script):
    """tests/unit/test_launch.py lints launch/; these two live in benchmarks/."""
    result = subprocess.run(
        ["shellcheck", str(ROOT / "benchmarks" / script)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout
