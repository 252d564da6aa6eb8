"""Workdirs on cloud storage stay cloud paths; local ones become absolute."""

import os

import numpy as np

from sara_jax.io import files


def test_gcs_workdirs_stay_gcs_paths():
    run = files.resolve("gs://bucket/runs/sara")
    assert str(run) == "gs://bucket/runs/sara"
    assert str(run / "checkpoints") == "gs://bucket/runs/sara/checkpoints"


def test_local_workdirs_become_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert str(files.resolve("run")) == os.path.join(str(tmp_path), "run")
    assert str(files.resolve("~/run")) == os.path.expanduser("~/run")


def test_npz_and_png_writers_go_through_the_path(tmp_path):
    out = files.resolve(tmp_path) / "chunk.npz"
    files.write_npz(out, arr_0=np.arange(6).reshape(2, 3), arr_1=np.ones(2))
    back = files.read_npz(out)
    np.testing.assert_array_equal(back["arr_0"], np.arange(6).reshape(2, 3))
    assert sorted(os.listdir(tmp_path)) == ["chunk.npz"]  # No temporary file left behind.
    files.save_grid(np.zeros((1, 2, 4, 4, 3), np.uint8), files.resolve(tmp_path) / "grid.png")
    assert (tmp_path / "grid.png").read_bytes()[:4] == b"\x89PNG"
