"""Fig. 2 analyses: hand-computed correlation maps and SVD energies, the heatmap PNG, the CLI."""

import json

import numpy as np
import pytest
from PIL import Image
from test_main import run_main

from sara_jax import analysis


def rotate(v, degrees):
    a = np.deg2rad(degrees)
    return np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]]) @ v


def solid(color, n):
    """An n x n block of one RGB colour."""
    return np.broadcast_to(color, (n, n, 3))


def test_patch_correlation_map_places_cosines_on_the_row_major_grid():
    # 3x3 grid of 2-d tokens; the reference is token 5 (row 1, column 2).
    v = np.array([2.0, 1.0])
    angles = {0: 90, 1: 60, 2: 180, 3: 120, 4: 0, 5: 0, 6: 90, 7: 180, 8: 60}
    tokens = np.stack([(1 + i) * rotate(v, angles[i]) for i in range(9)]).astype(np.float32)
    got = analysis.patch_correlation_map(tokens, patch=5)
    want = np.cos(np.deg2rad([angles[i] for i in range(9)])).reshape(3, 3)
    np.testing.assert_allclose(got, want, atol=1e-6)
    assert got[1, 2] == pytest.approx(1.0)  # Itself.
    assert got[0, 2] == pytest.approx(-1.0) and got[2, 1] == pytest.approx(-1.0)  # Negated.
    assert got[1, 1] == pytest.approx(1.0)  # A positive multiple.


def test_patch_correlation_map_rejects_non_square_grids_and_bad_patches():
    with pytest.raises(ValueError, match="square grid"):
        analysis.patch_correlation_map(np.ones((6, 2), np.float32), 0)
    with pytest.raises(ValueError, match="patch must be in"):
        analysis.patch_correlation_map(np.ones((4, 2), np.float32), 4)


def test_top_singular_energy_hand_computed():
    rng = np.random.default_rng(0)
    rank1 = np.outer(rng.normal(size=7), rng.normal(size=5))
    assert analysis.top_singular_energy(rank1, k=1) == pytest.approx(1.0)
    assert analysis.top_singular_energy(rank1) == pytest.approx(1.0)  # k > rank is clipped.

    orthonormal, _ = np.linalg.qr(rng.normal(size=(8, 8)))
    assert analysis.top_singular_energy(orthonormal, k=3) == pytest.approx(3 / 8)

    # [[1, 1], [0, 1]]: A^T A = [[1, 1], [1, 2]] has eigenvalues (3 +- sqrt 5) / 2, sum 3.
    # (Centring the rows first would leave rank 1 and an energy of 1.)
    a = np.array([[1.0, 1.0], [0.0, 1.0]])
    assert analysis.top_singular_energy(a, k=1) == pytest.approx((3 + np.sqrt(5)) / 6)
    assert analysis.top_singular_energy(a, k=2) == pytest.approx(1.0)

    with pytest.raises(ValueError, match="non-zero"):
        analysis.top_singular_energy(np.zeros((3, 2)))


def test_heatmap_png_size_colours_and_per_map_normalisation(tmp_path):
    base = np.zeros((4, 4), np.float32)
    base[0, 0], base[3, 2] = 0.5, -0.5
    maps = np.stack([np.stack([base, 4 * base, -base])] * 2)  # (2, 3, 4, 4)
    path = tmp_path / "maps.png"
    analysis.heatmap_png(maps, path, cell=16)
    png = np.asarray(Image.open(path).convert("RGB"))
    assert png.shape == (2 * 18 + 2, 3 * 18 + 2, 3)  # save_grid's 2-pixel padding.
    assert list(tmp_path.iterdir()) == [path]

    def cell(r, c):
        y, x = 2 + r * 18, 2 + c * 18
        return png[y : y + 16, x : x + 16]

    first = cell(1, 0)
    # Each map cell is a uniform 4x4 block; the map's extremes reach the colormap's ends.
    np.testing.assert_array_equal(first[:4, :4], solid(analysis.POSITIVE, 4))
    np.testing.assert_array_equal(first[12:, 8:12], solid(analysis.NEGATIVE, 4))
    np.testing.assert_array_equal(first[5, 5], analysis.NEUTRAL)
    np.testing.assert_array_equal(cell(1, 1), first)  # 4x the map, same picture.
    np.testing.assert_array_equal(cell(1, 2)[:4, :4], solid(analysis.NEGATIVE, 4))


def test_colorize_is_linear_between_the_ends():
    np.testing.assert_array_equal(
        analysis.colorize(np.array([-1.0, 0.0, 1.0, 3.0])),
        np.stack([analysis.NEGATIVE, analysis.NEUTRAL, analysis.POSITIVE, analysis.POSITIVE]),
    )
    half = (analysis.NEUTRAL + analysis.POSITIVE) / 2
    np.testing.assert_array_equal(analysis.colorize(np.array(0.5)), np.round(half))


def test_cli_writes_fig2a_and_fig2b_for_a_trained_demo_model(tmp_path):
    result = run_main(tmp_path, "--config.train.num_steps=2", "--config.train.checkpoint_every=2")
    assert result.returncode == 0, result.stderr[-3000:]
    out = tmp_path / "fig2"
    result = run_main(
        tmp_path, f"--out={out}", "--num_images=3", "--top_k=4", module="sara_jax.analysis"
    )
    assert result.returncode == 0, result.stderr[-3000:]

    # 3 images x (encoder, model); 32x32 pixels / patch 4 = an 8x8 grid, 8 pixels per token.
    png = np.asarray(Image.open(out / "fig2a.png").convert("RGB"))
    assert png.shape == (3 * 66 + 2, 2 * 66 + 2, 3)
    for r in range(3):
        for c in range(2):
            y, x = 2 + r * 66 + 4 * 8, 2 + c * 66 + 4 * 8  # The centre patch (4, 4) = 36.
            np.testing.assert_array_equal(png[y : y + 8, x : x + 8], solid(analysis.POSITIVE, 8))

    fig2b = json.loads((out / "fig2b.json").read_text())
    assert fig2b["step"] == 2 and fig2b["num_images"] == 3 and fig2b["t"] == 0.5
    assert fig2b["centre_patch"] == 36
    # 3 images x 64 tokens; encoder width 16, SiT width 32, projected back to 16.
    for name, width in (("z_enc", 16), ("h", 32), ("h_den", 16)):
        assert fig2b[name]["shape"] == [3 * 64, width] and fig2b[name]["k"] == 4
        # The top-k share is at least the average k / width and at most everything.
        assert 4 / width - 1e-6 <= fig2b[name]["energy"] < 1.0


def test_cli_names_a_missing_checkpoint(tmp_path):
    result = run_main(tmp_path, f"--out={tmp_path / 'fig2'}", module="sara_jax.analysis")
    assert result.returncode != 0
    assert "no checkpoint under" in result.stderr
