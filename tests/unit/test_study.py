"""The study's aggregation of logged curves, on hand-written event files with known answers,
and the study command's arms."""

from pathlib import Path

import numpy as np
from clu import metric_writers

from sara_jax import study as study_command
from sara_jax.evaluation import study
from sara_jax.io.events import read_scalars


def write_curve(workdir: Path, tag: str, points: dict[int, float]) -> None:
    writer = metric_writers.SummaryWriter(str(workdir))
    for step, value in points.items():
        writer.write_scalars(step, {tag: value})
    writer.close()


def test_steps_to_reach_finds_the_first_step_at_least_as_good():
    steps, values = [100, 200, 300, 400], [9.0, 6.0, 4.0, 3.0]
    assert study.steps_to_reach(steps, values, 4.0, higher_is_better=False) == 300
    assert study.steps_to_reach(steps, values, 2.0, higher_is_better=False) is None
    assert study.steps_to_reach(steps, [0.1, 0.5, 0.9, 0.95], 0.9, higher_is_better=True) == 300


def test_aggregation_of_event_files_gives_mean_spread_and_speedups(tmp_path):
    # SiT reaches fd 4 at its last step 400; REPA at 200 (2x faster); SARA at 100 (2x again).
    curves = {
        "none": {0: [9, 7, 5, 4], 1: [11, 9, 7, 4]},
        "repa": {0: [8, 5, 3, 2], 1: [8, 3, 3, 2]},
        "sara": {0: [4, 2, 1, 1], 1: [4, 2, 1, 1]},
    }
    runs = {}
    for method, seeds in curves.items():
        for seed, values in seeds.items():
            workdir = tmp_path / method / f"seed{seed}"
            write_curve(workdir, "fd", dict(zip([100, 200, 300, 400], values, strict=True)))
            runs.setdefault(method, {})[seed] = read_scalars(str(workdir))

    summary = study.aggregate(runs, ["fd"])
    sit = summary["curves"]["fd"]["none"]
    assert sit["steps"] == [100, 200, 300, 400] and sit["seeds"] == [0, 1]
    np.testing.assert_allclose(sit["mean"], [10, 8, 6, 4])
    np.testing.assert_allclose(sit["std"], [np.sqrt(2)] * 3 + [0])
    rows = {(r["baseline"], r["method"]): r for r in summary["speedups"]}
    assert set(rows) == {("none", "repa"), ("repa", "sara")}
    repa = rows["none", "repa"]
    assert (repa["threshold"], repa["baseline_steps"], repa["method_steps"]) == (4, 400, 200)
    assert repa["ratio"] == 2.0 and repa["method_steps_per_seed"] == [300, 200]
    sara = rows["repa", "sara"]
    assert (sara["threshold"], sara["method_steps"], sara["ratio"]) == (2, 200, 2.0)

    table = study.markdown(summary, [200, 400])
    assert "| SiT | 2 | 8 +- 1.4 | 4 +- 0 |" in table
    assert "| fd | REPA | SARA | 2 | 400 | 200 | [200, 200] | 2.00x |" in table
    written = study.plot(summary, tmp_path / "out")
    assert [p.name for p in written] == ["fd.png"] and written[0].stat().st_size > 0


def test_higher_is_better_metrics_and_unreached_thresholds():
    runs = {
        "repa": {0: {"class_acc": (np.array([1, 2]), np.array([0.5, 0.8]))}},
        "sara": {0: {"class_acc": (np.array([1, 2]), np.array([0.6, 0.7]))}},
    }
    (row,) = study.aggregate(runs, ["class_acc"])["speedups"]
    assert (row["threshold"], row["baseline_steps"], row["method_steps"]) == (0.8, 2, None)
    assert row["ratio"] is None
    assert "not reached" in study.markdown(study.aggregate(runs, ["class_acc"]))


def test_arms_are_the_grid_then_the_extra_ones_without_repeats():
    arms = study_command.arms(["none", "sara"], [0, 1], ["patch+struc@0", "sara@1"])
    assert arms == [("none", 0), ("none", 1), ("sara", 0), ("sara", 1), ("patch+struc", 0)]
    assert study_command.alignment_terms("patch+adv") == "patch,adv"
    assert study_command.alignment_terms("repa") == "patch"
