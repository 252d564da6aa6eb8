"""The study's aggregation of logged curves, on hand-written event files with known answers,
and the study command's arms."""

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from absl import app

from configs import demo, shapes_study
from sara_jax import study as study_command
from sara_jax.config import validate
from sara_jax.evaluation import study
from sara_jax.io import files, preemption
from sara_jax.io.events import read_scalars
from sara_jax.io.tensorboard import create_writer


def write_curve(workdir: Path, tag: str, points: dict[int, float]) -> None:
    writer = create_writer(workdir, just_logging=False)
    for step, value in points.items():
        writer.write_scalars(step, {tag: value})
    writer.close()


def test_steps_to_reach_interpolates_the_first_crossing():
    steps, values = [100, 200, 300, 400], [9.0, 6.0, 4.0, 3.0]
    assert study.steps_to_reach(steps, values, 4.0, higher_is_better=False) == 300
    assert study.steps_to_reach(steps, values, 5.0, higher_is_better=False) == 250
    assert study.steps_to_reach(steps, values, 8.25, higher_is_better=False) == 125
    assert study.steps_to_reach(steps, values, 10.0, higher_is_better=False) == 100
    assert study.steps_to_reach(steps, values, 2.0, higher_is_better=False) is None
    higher = [0.1, 0.5, 0.4, 0.95]  # Crosses 0.45 first between 100 and 200, not 300 and 400.
    assert study.steps_to_reach(steps, higher, 0.45, higher_is_better=True) == 187.5
    assert study.steps_to_reach(steps, higher, 0.95, higher_is_better=True) == 400


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

    summary = study.aggregate(runs, ["fd"], thresholds=[("fd", 6.0)])
    sit = summary["curves"]["fd"]["none"]
    assert sit["steps"] == [100, 200, 300, 400] and sit["seeds"] == [0, 1]
    np.testing.assert_allclose(sit["mean"], [10, 8, 6, 4])
    np.testing.assert_allclose(sit["std"], [np.sqrt(2)] * 3 + [0])
    rows = {(r["baseline"], r["method"], r["threshold_from"]): r for r in summary["speedups"]}
    assert set(rows) == {
        (*pair, source)
        for pair in [("none", "repa"), ("repa", "sara")]
        for source in ("baseline final", "chosen")
    }
    # The baseline's final values: SiT's mean 4 at step 400, REPA's 2 at step 400.
    repa = rows["none", "repa", "baseline final"]
    assert (repa["threshold"], repa["baseline_steps"], repa["method_steps"]) == (4, 400, 200)
    # Seed 0 crosses 4 half-way from 5 (step 200) to 3 (step 300); seed 1 at 4/5 of 8 -> 3.
    assert repa["ratio"] == 2.0 and repa["method_steps_per_seed"] == [250, 180]
    # Both SiT seeds need 400: 185 steps faster, standard error sqrt(0 / 2 + 2450 / 2) = 35.
    assert repa["baseline_steps_per_seed"] == [400, 400]
    assert repa["difference"] == {"steps": 185.0, "se": 35.0, "exceeds_spread": True}
    sara = rows["repa", "sara", "baseline final"]
    assert (sara["threshold"], sara["method_steps"], sara["ratio"]) == (2, 200, 2.0)
    # fd 6: SiT's mean at step 300, REPA's half-way from 8 to 4, SARA's from its first step.
    reached = {r["method"]: r["steps"] for r in summary["reach"]}
    assert reached == {"none": 300, "repa": 150, "sara": 100}
    assert rows["none", "repa", "chosen"]["ratio"] == 2.0
    assert rows["repa", "sara", "chosen"]["ratio"] == 1.5

    table = study.markdown(summary, [200, 400])
    assert "| SiT | 2 | 8 +- 1.4 | 4 +- 0 |" in table
    assert "| fd | 6 | REPA | 2 | 150 | 167, 140 |" in table
    assert "| fd | 2 (baseline final) | REPA | SARA | 400 | 200 | 200, 200 | 2.00x |" in table
    written = study.plot(summary, tmp_path / "out")
    assert [p.name for p in written] == ["fd.png"] and written[0].stat().st_size > 0


def test_a_difference_counts_only_beyond_two_standard_errors_of_the_seeds():
    # Means 300 and 260: 40 apart; s.e. sqrt(100^2 / 3 + 100^2 / 3) = 81.6, so not beyond.
    wide = study.seed_difference([200, 300, 400], [160, 260, 360])
    assert wide["steps"] == 40 and not wide["exceeds_spread"]
    np.testing.assert_allclose(wide["se"], np.sqrt(2 / 3) * 100)
    narrow = study.seed_difference([299, 300, 301], [259, 260, 261])  # s.e. 0.82
    assert narrow["exceeds_spread"]
    # Unreached by a seed, or one seed: no verdict.
    assert study.seed_difference([200, None], [100, 120]) is None
    assert study.seed_difference([200], [100]) is None


def test_the_gap_at_each_step_names_the_method_ahead_only_beyond_two_standard_errors():
    def fd(steps, values):
        return {"fd": (np.array(steps), np.array(values, np.float64))}

    every = [100, 200, 400]
    runs = {
        "none": {0: fd(every, [9, 7, 4]), 1: fd(every, [11, 9, 4])},
        "repa": {0: fd(every, [8, 5, 2]), 1: fd(every, [8, 3, 2])},
        "sara": {0: fd([100, 400], [7, 3])},  # One seed: no verdict at any step.
    }
    rows = study.aggregate(runs, ["fd"])["differences"]
    gaps = {r["step"]: r for r in rows if (r["baseline"], r["method"]) == ("none", "repa")}
    assert len(rows) == len(gaps) == 3
    # Step 100: means 10 and 8, s.e. sqrt(2 / 2 + 0 / 2) = 1; a gap of exactly 2 s.e. is not beyond.
    assert (gaps[100]["difference"], gaps[100]["se"], gaps[100]["ahead"]) == (-2, 1, None)
    # Step 200: means 8 and 4, s.e. sqrt(2 / 2 + 2 / 2); lower fd is better, so REPA is ahead.
    assert gaps[200]["difference"] == -4 and gaps[200]["ahead"] == "repa"
    np.testing.assert_allclose(gaps[200]["se"], np.sqrt(2))
    assert (gaps[400]["difference"], gaps[400]["se"], gaps[400]["ahead"]) == (-2, 0, "repa")
    table = study.markdown({**study.aggregate(runs, ["fd"]), "reach": [], "speedups": []})
    assert "| fd | SiT | REPA | -2 +- 1 | -4 +- 1.4 (REPA) | -2 +- 0 (REPA) |" in table
    # The higher-is-better side: the baseline ahead when the method's mean is lower.
    flipped = {
        m: {s: {"class_acc": c["fd"]} for s, c in seeds.items()} for m, seeds in runs.items()
    }
    (row,) = (r for r in study.aggregate(flipped, ["class_acc"])["differences"] if r["step"] == 200)
    assert row["ahead"] == "none"


def test_the_study_compares_irepa_with_the_methods_it_changes():
    methods = ["none", "repa", "sara", "irepa", "sara_irepa"]
    assert study.default_pairs(methods) == list(study.PAIRS)
    assert study.default_pairs(["none", "repa", "sara"]) == [("none", "repa"), ("repa", "sara")]
    assert study.label("sara_irepa") == "SARA+iREPA" and study.label("irepa") == "iREPA"


def test_higher_is_better_metrics_and_unreached_thresholds():
    runs = {
        "repa": {0: {"class_acc": (np.array([1, 2]), np.array([0.5, 0.8]))}},
        "sara": {0: {"class_acc": (np.array([1, 2]), np.array([0.6, 0.7]))}},
    }
    (row,) = study.aggregate(runs, ["class_acc"])["speedups"]
    assert (row["threshold"], row["baseline_steps"], row["method_steps"]) == (0.8, 2, None)
    assert row["ratio"] is None
    assert "not reached" in study.markdown(study.aggregate(runs, ["class_acc"]))


def test_spatial_metrics_are_tabled_without_a_direction_and_the_gap_falls():
    # LDS falls with training here; a direction would turn that into a "speed-up" either way.
    runs = {
        m: {
            0: {
                tag: (np.array([1, 2]), np.array(v))
                for tag in ("spatial/h_den/lds", "struc_gap/h_den")
            }
        }
        for m, v in {"none": [0.2, 0.1], "repa": [0.1, 0.05]}.items()
    }
    summary = study.aggregate(runs, ["spatial/h_den/lds", "struc_gap/h_den"])
    (row,) = summary["speedups"]
    assert row["metric"] == "struc_gap/h_den" and row["ratio"] == 2 / 1
    table = study.markdown(summary)
    assert "### spatial/h_den/lds (higher = more spatial structure; no better direction;" in table
    assert "### struc_gap/h_den (lower = closer to the encoder's structure;" in table
    with pytest.raises(ValueError, match="spatial/h_den/lds: it has no better direction"):
        study.aggregate(runs, ["spatial/h_den/lds"], thresholds=[("spatial/h_den/lds", 0.1)])
    with pytest.raises(app.UsageError, match="spatial/z_den/cds has no better direction"):
        study_command.thresholds(["spatial/z_den/cds:0.01"])


def test_early_values_are_rank_correlated_with_the_steps_to_a_threshold():
    steps = np.array([100, 200, 300])
    # Arms reach class_acc 0.5 at 300, 200, never, 100; LDS at step 100 in that order (rho +1),
    # at step 200 in the reverse order (rho -1).
    arms = {
        ("none", 0): ([0.1, 0.2, 0.5], [0.3, 0.2]),
        ("none", 1): ([0.1, 0.5, 0.6], [0.2, 0.3]),
        ("repa", 0): ([0.1, 0.2, 0.3], [0.4, 0.1]),
        ("repa", 1): ([0.5, 0.6, 0.7], [0.1, 0.4]),
    }
    runs = {}
    for (method, seed), (acc, lds) in arms.items():
        runs.setdefault(method, {})[seed] = {
            "class_acc": (steps, np.array(acc)),
            "spatial/h_den/lds": (steps[:2], np.array(lds)),
            "spatial/z_enc/lds": (steps[:2], np.array([0.5, 0.5])),  # The same for every arm.
        }
    summary = study.aggregate(
        runs,
        ["class_acc", "spatial/h_den/lds", "spatial/z_enc/lds"],
        thresholds=[("class_acc", 0.5)],
    )
    rows = {(r["metric"], r["step"]): r for r in study.predictors(summary, [100, 200, 300])}
    assert set(rows) == {(m, s) for m in ("class_acc", "spatial/h_den/lds") for s in (100, 200)} | {
        ("class_acc", 300)
    }
    assert rows["spatial/h_den/lds", 100]["rho"] == pytest.approx(1.0)
    assert rows["spatial/h_den/lds", 200]["rho"] == pytest.approx(-1.0)
    assert rows["spatial/h_den/lds", 100]["arms"] == 4
    # The threshold's own metric at step 300: 0.5, 0.6, 0.3, 0.7 against 300, 200, never, 100.
    assert rows["class_acc", 300]["rho"] == pytest.approx(-1.0)
    summary["predictors"] = list(rows.values())
    assert "| spatial/h_den/lds | 100 | class_acc 0.5 | 4 | +1.00 |" in study.markdown(summary)


def test_thresholds_parse_metric_value_and_name_a_bad_entry():
    assert study_command.thresholds(["class_acc:0.4", "fd:20"]) == [("class_acc", 0.4), ("fd", 20)]
    for bad in ["class_acc", "class_acc:high", ":0.4"]:
        with pytest.raises(app.UsageError, match=f"entry '{bad}' must be metric:value"):
            study_command.thresholds([bad])


def test_an_arm_config_is_the_study_config_of_its_method():
    # What `sample --config=configs/shapes_study.py:<method>` draws from an arm's checkpoints.
    for method in shapes_study.VARIANTS:
        expected = shapes_study.get_config(method)
        expected.seed = 3
        assert study_command.arm_config(shapes_study.get_config(), method, 3) == expected


def test_arms_are_the_grid_then_the_extra_ones_without_repeats():
    arms = study_command.arms(["none", "sara"], [0, 1], ["patch+struc@0", "sara@1"])
    assert arms == [("none", 0), ("none", 1), ("sara", 0), ("sara", 1), ("patch+struc", 0)]
    assert study_command.alignment_terms("patch+adv") == "patch,adv"
    assert study_command.alignment_terms("repa") == "patch"


def test_a_probe_arm_overrides_config_fields_after_the_paper_weights():
    base = demo.get_config()
    config = study_command.arm_config(base, "sara+loss.struc_weight=0.1+model.encoder_depth=1", 3)
    assert (config.loss.patch_weight, config.loss.struc_weight, config.loss.adv_weight) == (
        0.5,
        0.1,
        0.05,
    )
    assert (config.model.encoder_depth, config.seed) == (1, 3)
    reduction = study_command.arm_config(base, "repa+loss.struc_reduction=sum", 0).loss
    assert (reduction.struc_reduction, reduction.struc_weight) == ("sum", 0.0)
    assert base.loss.struc_weight == 0.5 and base.model.encoder_depth == 2
    with pytest.raises(app.UsageError, match="no config field 'loss.beta'"):
        study_command.arm_config(base, "sara+loss.beta=0.1", 0)
    with pytest.raises(app.UsageError, match="model.depth='deep'"):
        study_command.arm_config(base, "sara+model.depth=deep", 0)
    with pytest.raises(app.UsageError, match="names no alignment terms"):
        study_command.arm_config(base, "loss.struc_weight=0.1", 0)


def test_irepa_methods_bring_their_fields_and_a_probe_overrides_them():
    base = demo.get_config()
    irepa = study_command.arm_config(base, "irepa", 0)
    assert (irepa.loss.patch_weight, irepa.loss.struc_weight, irepa.loss.adv_weight) == (1.0, 0, 0)
    assert (irepa.projector.kind, irepa.projector.kernel_size) == ("conv", 3)
    assert (irepa.loss.encoder_norm, irepa.loss.zscore_alpha) == ("zscore", 0.6)
    both = study_command.arm_config(base, "sara_irepa+projector.kernel_size=1", 1)
    assert (both.loss.patch_weight, both.loss.struc_weight, both.loss.adv_weight) == (
        0.5,
        0.5,
        0.05,
    )
    assert (both.projector.kind, both.projector.kernel_size, both.seed) == ("conv", 1, 1)
    assert both.loss.encoder_norm_terms == "all"
    assert study_command.arm_config(base, "repa", 0).projector.kind == "mlp"
    assert study_command.alignment_terms("sara_irepa") == "patch,struc,adv"
    for method in ("none", "repa", "sara", "irepa", "sara_irepa"):
        validate(study_command.arm_config(base, method, 0))


def test_a_preempted_arm_is_not_marked_finished_and_a_finished_one_is_skipped(
    tmp_path, monkeypatch
):
    config = demo.get_config()
    workdir = tmp_path / "sara" / "seed0"

    def preempted(c, w):
        files.resolve(w).mkdir(parents=True)  # As the loop leaves it: checkpoints, no marker.
        raise preemption.Preempted("saved step 7")

    monkeypatch.setattr(study_command.loop, "train_and_evaluate", preempted)
    with pytest.raises(preemption.Preempted, match="saved step 7"):
        study_command.run_arm(config, str(workdir), "sara", 0)
    assert not (workdir / "arm.json").exists()

    finished = SimpleNamespace(step=config.train.num_steps)
    monkeypatch.setattr(study_command.loop, "train_and_evaluate", lambda c, w: finished)
    study_command.run_arm(config, str(workdir), "sara", 0)
    assert json.loads((workdir / "arm.json").read_text())["steps"] == config.train.num_steps

    def fail(c, w):
        raise AssertionError("a finished arm was trained again")

    monkeypatch.setattr(study_command.loop, "train_and_evaluate", fail)
    study_command.run_arm(config, str(workdir), "sara", 0)
