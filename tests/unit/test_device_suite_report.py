"""benchmarks/device_suite_report.py: the device suite's summary from hand-written step records."""

import json

from benchmarks.device_suite_report import missing, summary


def write_step(work, name, status, report=None, rc=0):
    with (work / "status.tsv").open("a") as f:
        f.write(f"{name}\t{status}\t{rc}\t12\t200\tpython -m benchmarks.train_step --x\n")
    if report is not None:
        (work / "json" / f"{name}.json").write_text(json.dumps(report))


def train_report(sit_ms, repa_ms, sara_ms, sara_mfu):
    def mode(ms, mfu):
        return {"global_batch": 256, "images_per_sec": 256e3 / ms, "step_ms": ms, "mfu": mfu}

    return {
        "results": {
            "sit": mode(sit_ms, 0.6),
            "repa": mode(repa_ms, 0.55),
            "sara": mode(sara_ms, sara_mfu),
        },
        "overheads": {
            "repa_over_sit": repa_ms / sit_ms - 1,
            "sara_over_repa": sara_ms / repa_ms - 1,
        },
    }


def test_summary_reports_targets_reruns_and_the_record(tmp_path):
    work, out = tmp_path / "work", tmp_path / "out"
    (work / "json").mkdir(parents=True)
    out.mkdir()
    (work / "info.json").write_text(json.dumps({"device_kind": "NVIDIA H200", "num_devices": 1}))
    write_step(work, "sit_xl", "ok", train_report(400.0, 420.0, 480.0, 0.47))
    write_step(work, "sit_xl_accum2", "ok", train_report(400.0, 420.0, 440.0, 0.52))
    write_step(work, "sit_l", "FAILED (exit 1)", rc=1)
    sample = {
        **{"method": "sde", "num_steps": 250, "cfg_scale": 1.35, "velocity_evaluations": 500},
        **{"batch": 64, "images_per_sec": 20.0, "batch_s": 3.2, "compile_s": 9.0},
    }
    write_step(work, "sample_xl_sde_cfg", "ok", sample)

    text = summary(work, out, "h200", 460, 300, False, "not needed")
    assert text == (out / "h200_suite.txt").read_text()
    assert "NVIDIA H200 x 1" in text and "300 s of a 460 s budget" in text
    # 480 / 420 - 1 = 14.3% and MFU 47% miss; 440 / 420 - 1 = 4.8% and 52% meet.
    assert "sit_xl SARA MFU 47.0% (>= 50%: MISSED)" in text
    assert "sit_xl SARA over REPA +14.3% (<= 10%: MISSED)" in text
    assert "sit_xl_accum2 SARA MFU 52.0% (>= 50%: met)" in text
    assert "sit_xl_accum2 SARA over REPA +4.8% (<= 10%: met)" in text
    assert "--only sit_l\n" in text
    assert "sample_xl_sde_cfg        sde      250  1.35   500    64    20.00" in text

    record = json.loads((out / "h200_suite.json").read_text())
    steps = {s["name"]: s for s in record["steps"]}
    assert steps["sit_l"] == {
        **{"name": "sit_l", "status": "FAILED (exit 1)", "exit_code": 1, "seconds": 12},
        **{"time_box_s": 200, "command": "python -m benchmarks.train_step --x"},
        **{"json": None, "report": None},
    }
    assert steps["sit_xl"]["json"] == "h200_sit_xl.json"
    assert steps["sit_xl"]["report"]["results"]["sara"]["step_ms"] == 480.0
    assert not list(out.glob("*.tmp"))


def test_missing_names_the_wheels_whose_package_is_not_installed(tmp_path):
    wheels = [str(tmp_path / "numpy-2.0.0-cp311-none-any.whl")]
    wheels.append(str(tmp_path / "no_such_package_xyz-1.0-py3-none-any.whl"))
    assert missing(wheels) == ["no_such_package_xyz"]
