"""Fig. 2 analyses: hand-computed correlation maps and SVD energies, the heatmap PNG
(the CLI: e2e/test_analysis_e2e.py)."""

import numpy as np
import pytest
from helpers import solid
from PIL import Image

from sara_jax import analysis


def rotate(v, degrees):
    a = np.deg2rad(degrees)
    return np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]]) @ v


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
