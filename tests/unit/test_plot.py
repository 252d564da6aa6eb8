"""sara_jax.plot's run labels, errors and smoothing (the command on the logs of a real run:
e2e/test_plot_e2e.py)."""

import numpy as np
import pytest

from sara_jax import plot


def test_labels_default_to_directory_names():
    assert plot.run_labels(["runs/sit", "gs://b/runs/sara/"], []) == ["sit", "sara"]
    with pytest.raises(ValueError, match="2 --workdirs"):
        plot.run_labels(["a", "b"], ["only one"])
    with pytest.raises(ValueError, match="distinct"):
        plot.run_labels(["x/run", "y/run"], [])


def test_errors_name_what_is_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        plot.read_scalars(str(tmp_path))
    runs = {"a": {"loss": (np.array([1]), np.array([1.0]))}}
    with pytest.raises(ValueError, match=r"found \['loss'\]"):
        plot.plot_runs(runs, ["fid"], tmp_path)


def test_smoothing_is_tensorboards():
    np.testing.assert_allclose(plot.smooth(np.full(5, 3.0), 0.9), 3.0)
    values = np.array([1.0, 3.0])
    # Debiased EMA: the first point is kept; the second is (0.25 * 1 + 0.5 * 3) / (1 - 0.25).
    np.testing.assert_allclose(plot.smooth(values, 0.5), [1.0, (0.25 * 1 + 0.5 * 3) / 0.75])


def test_the_evaluation_metrics_a_run_logged_are_drawn_by_default(tmp_path):
    steps = np.array([300, 600])
    runs = {
        "demo": {
            "loss": (np.arange(1, 601), np.linspace(1, 0.2, 600)),
            "fd": (steps, np.array([6.6, 0.33])),
            "class_acc": (steps, np.array([0.8, 1.0])),
            "spatial/h_den/lds": (steps, np.array([0.1, 0.3])),
            "struc_gap/z_den": (steps, np.array([0.5, 0.4])),
        }
    }
    drawn = plot.plot_runs(runs, list(plot.TITLES), tmp_path)
    names = ["loss", "fd", "class_acc", "spatial_h_den_lds", "struc_gap_z_den", "curves"]
    assert [p.name for p in drawn] == [f"{name}.png" for name in names]
