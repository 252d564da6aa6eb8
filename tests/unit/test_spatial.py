"""Tests for sara_jax.evaluation.spatial: hand-made grids whose metric values are known in
closed form, properties every metric must have, the grid checks and the batch summary."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sara_jax.evaluation import spatial
from sara_jax.io.errors import InputError

E1, E2 = np.array([1.0, 0.0]), np.array([0.0, 1.0])


def checkerboard(height: int, width: int) -> np.ndarray:
    """(1, H * W, 2): e1 on cells with r + c even, e2 on odd ones, so cos = 1 at even distances
    and 0 at odd ones."""
    rows, cols = np.divmod(np.arange(height * width), width)
    return np.where(((rows + cols) % 2 == 0)[:, None], E1, E2)[None].astype(np.float32)


def halves() -> np.ndarray:
    """(1, 16, 2) on a 4 x 4 grid: e1 on the top two rows, e2 on the bottom two."""
    return np.where((np.arange(16) < 8)[:, None], E1, E2)[None].astype(np.float32)


def sincos_grid(side: int, dim: int) -> np.ndarray:
    """(1, side * side, dim) tokens that vary slowly with position: sines and cosines of the
    row and column at low frequencies."""
    rows, cols = np.divmod(np.arange(side * side), side)
    freqs = np.linspace(0.05, 0.4, dim // 4)
    angles = np.concatenate([rows[:, None] * freqs, cols[:, None] * freqs], axis=1)
    return np.concatenate([np.sin(angles), np.cos(angles)], axis=1)[None].astype(np.float32)


def line_of_eight(background_far: bool) -> np.ndarray:
    """(1, 8, 2) on a 1 x 8 grid: cells 0-2 (the foreground of LINE_MASK) and cell 7 are e1,
    cells 3-6 are e2."""
    tokens = np.tile(E2, (8, 1))
    tokens[[0, 1, 2]] = E1
    if background_far:
        tokens[7] = E1
    return tokens[None].astype(np.float32)


LINE_MASK = np.array([[True, True, True, False, False, False, False, False]])


@pytest.mark.parametrize(
    "tokens, grid, far_dist, expected",
    [
        # 4 x 4 checkerboard: neighbours are at odd distance (cos 0); distance 6 is only the
        # 4 ordered corner pairs, at even distance (cos 1).
        (checkerboard(4, 4), (4, 4), 6, -1.0),
        # 3 x 3 checkerboard, far_dist 3: 16 ordered pairs at distance 3 (cos 0) and 4 at
        # distance 4 (cos 1), so the far mean is 4 / 20.
        (checkerboard(3, 3), (3, 3), 3, -0.2),
        # Halves: 20 of the 24 neighbour pairs lie within a half (cos 1); both corner pairs at
        # distance 6 cross the halves (cos 0).
        (halves(), (4, 4), 6, 5 / 6),
        # No pair on a 3 x 3 grid is 6 apart: the far mean is taken as 0 (iREPA's clamp).
        (checkerboard(3, 3), (3, 3), 6, 0.0),
    ],
)
def test_lds_hand_cases(tokens, grid, far_dist, expected):
    np.testing.assert_allclose(spatial.lds(tokens, grid, far_dist=far_dist), [expected], atol=1e-6)


@pytest.mark.parametrize(
    "side, expected",
    [
        # Per-distance means 0, 1, 0, 1, 0, 1 at d = 1..6: slope = 1.5 / 17.5.
        (4, -3 / 35),
        # Only d = 1..4 exist on a 3 x 3 grid (dmax 8 is cut to them): means 0, 1, 0, 1, slope 1/5.
        (3, -0.2),
    ],
)
def test_cds_checkerboard(side, expected):
    np.testing.assert_allclose(
        spatial.cds(checkerboard(side, side), (side, side)), [expected], atol=1e-6
    )


def test_cds_dmax_limits_the_fit():
    # dmax 2 fits only d = 1, 2 (means 0, 1): slope 1.
    np.testing.assert_allclose(spatial.cds(checkerboard(4, 4), (4, 4), dmax=2), [-1.0], atol=1e-6)


def test_degenerate_grids():
    tokens = np.random.default_rng(0).normal(size=(2, 2, 5)).astype(np.float32)
    # One distance (1 x 2 grid): no slope to fit, CDS 0. One cell: no neighbours, LDS NaN.
    np.testing.assert_array_equal(spatial.cds(tokens, (1, 2)), [0.0, 0.0])
    assert np.isnan(spatial.lds(tokens[:, :1], (1, 1))).all()


@pytest.mark.parametrize(
    "tokens, grid, expected",
    [
        # 8 e1 and 8 e2: every unit token is (e1 - e2) / 2 away from the mean.
        (checkerboard(4, 4), (4, 4), np.sqrt(0.5)),
        (halves(), (4, 4), np.sqrt(0.5)),
        # 5 e1 and 4 e2: mean ||x - m||^2 = 1 - ||m||^2 = 1 - 41 / 81.
        (checkerboard(3, 3), (3, 3), np.sqrt(40) / 9),
    ],
)
def test_rmsc_hand_cases(tokens, grid, expected):
    np.testing.assert_allclose(spatial.rmsc(tokens, grid), [expected], rtol=1e-6)


def test_identical_tokens_have_no_structure():
    tokens = np.tile(np.random.default_rng(1).normal(size=(1, 1, 8)), (2, 16, 1)).astype(np.float32)
    for metric in (spatial.lds, spatial.cds, spatial.rmsc):
        np.testing.assert_allclose(metric(tokens, (4, 4)), [0.0, 0.0], atol=1e-6)


def test_smooth_grid_has_more_structure_than_shuffled_tokens():
    smooth = sincos_grid(16, 32)
    shuffled = smooth[:, np.random.default_rng(0).permutation(256)]
    lds_smooth, lds_shuffled = spatial.lds(smooth)[0], spatial.lds(shuffled)[0]
    cds_smooth, cds_shuffled = spatial.cds(smooth)[0], spatial.cds(shuffled)[0]
    # Measured: LDS 0.71 vs -0.003, CDS 0.069 vs 0.002.
    assert lds_smooth > 0.5 and abs(lds_shuffled) < 0.05, (lds_smooth, lds_shuffled)
    assert cds_smooth > 0.05 and abs(cds_shuffled) < 0.01, (cds_smooth, cds_shuffled)
    # RMSC ignores positions: a permutation of the tokens leaves it unchanged.
    np.testing.assert_allclose(spatial.rmsc(smooth), spatial.rmsc(shuffled), rtol=1e-6)


def test_metrics_ignore_token_norms():
    rng = np.random.default_rng(2)
    tokens = rng.normal(size=(3, 36, 6)).astype(np.float32)
    scaled = tokens * rng.uniform(0.01, 100.0, size=(3, 36, 1)).astype(np.float32)
    masks = np.arange(36)[None].repeat(3, 0) % 6 < 3
    for metric in (spatial.lds, spatial.cds, spatial.rmsc):
        np.testing.assert_allclose(metric(scaled, (6, 6)), metric(tokens, (6, 6)), atol=1e-6)
    np.testing.assert_allclose(
        spatial.srss(scaled, (6, 6), masks=masks, d_neg=3),
        spatial.srss(tokens, (6, 6), masks=masks, d_neg=3),
        atol=1e-6,
    )


@pytest.mark.parametrize(
    "background_far, d_neg, expected",
    [
        # All foreground neighbours are e1 (cos 1). Background at distance >= 4 holds one e1
        # (cell 7): anchors 0, 1, 2 see 1/4, 1/3, 1/2 of it.
        (True, 4, (3 / 4 + 2 / 3 + 1 / 2) / 3),
        # d_neg 6: anchor 2 has no background that far and is left out; anchors 0, 1 see
        # cells {6, 7} and {7}: means 1/2 and 1.
        (True, 6, (1 / 2 + 0) / 2),
        (False, 4, 1.0),
    ],
)
def test_srss_hand_cases(background_far, d_neg, expected):
    value = spatial.srss(line_of_eight(background_far), (1, 8), masks=LINE_MASK, d_neg=d_neg)
    np.testing.assert_allclose(value, [expected], atol=1e-6)


def test_srss_is_nan_where_undefined():
    tokens = np.tile(line_of_eight(True), (4, 1, 1))
    masks = np.stack(
        [
            LINE_MASK[0],  # defined: the d_neg = 6 case above
            np.arange(8) == 0,  # one foreground token
            np.ones(8, bool),  # no background
            (np.arange(8) >= 3) & (np.arange(8) <= 5),  # no background 6 cells from 3-5
        ]
    )
    value = np.asarray(spatial.srss(tokens, (1, 8), masks=masks))
    np.testing.assert_allclose(value[0], 0.25, atol=1e-6)
    assert np.isnan(value[1:]).all(), value


def test_srss_refuses_masks_of_another_shape():
    with pytest.raises(InputError, match=r"masks must have shape \(1, 8\)"):
        spatial.srss(line_of_eight(True), (1, 8), masks=LINE_MASK[:, :7])


def test_token_grid():
    assert spatial.token_grid(256) == (16, 16)
    assert spatial.token_grid(12, (3, 4)) == (3, 4)
    for num_tokens, grid in [(10, None), (16, (3, 5)), (16, (0, 16))]:
        with pytest.raises(InputError) as error:
            spatial.token_grid(num_tokens, grid)
        message = str(error.value)
        assert "\n" not in message and f"H * W = {num_tokens}" in message, message


def test_metrics_refuse_a_non_square_token_count_without_grid():
    tokens = np.zeros((1, 10, 4), np.float32)
    for metric in (spatial.lds, spatial.cds, spatial.rmsc):
        with pytest.raises(InputError, match="10 tokens do not form a square grid"):
            metric(tokens)


def test_metrics_trace_inside_jit():
    @jax.jit
    def all_metrics(u, masks):
        return jnp.stack(
            [
                spatial.lds(u, (4, 4)),
                spatial.cds(u, (4, 4)),
                spatial.rmsc(u, (4, 4)),
                spatial.srss(u, (4, 4), masks=masks, d_neg=3),
            ]
        )

    tokens = checkerboard(4, 4)
    masks = jnp.arange(16)[None] < 8
    out = np.asarray(all_metrics(tokens, masks))
    np.testing.assert_allclose(out[:3, 0], [-1.0, -3 / 35, np.sqrt(0.5)], atol=1e-6)
    assert np.isfinite(out[3, 0])


def test_spatial_metrics_keys_and_nanmean():
    tokens = np.concatenate([line_of_eight(True), line_of_eight(True)])
    masks = np.stack([LINE_MASK[0], np.ones(8, bool)])  # srss: 0.25 and NaN (no background)
    other = np.random.default_rng(3).normal(size=(2, 8, 3)).astype(np.float32)

    without_masks = spatial.spatial_metrics({"enc": tokens, "sit": other}, grid=(1, 8))
    assert set(without_masks) == {
        f"{n}/{m}" for n in ("enc", "sit") for m in ("lds", "cds", "rmsc")
    }

    summary = spatial.spatial_metrics({"enc": tokens, "sit": other}, masks=masks, grid=(1, 8))
    assert set(summary) == set(without_masks) | {"enc/srss", "sit/srss"}
    np.testing.assert_allclose(summary["enc/srss"], 0.25, atol=1e-6)
    np.testing.assert_allclose(
        summary["sit/lds"], np.mean(spatial.lds(other, (1, 8))), rtol=1e-6, atol=1e-7
    )
    assert all(isinstance(v, float) for v in summary.values())

    all_nan = spatial.spatial_metrics({"enc": tokens}, masks=np.ones((2, 8), bool), grid=(1, 8))
    assert np.isnan(all_nan["enc/srss"])
