"""sara_jax.models.resize against torch.nn.functional.interpolate (bicubic, align_corners=False)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from sara_jax.models.resize import bicubic_weights, resample_pos_embed, resize_bicubic  # noqa: E402


def torch_resize(x: np.ndarray, size, antialias: bool) -> np.ndarray:
    """NHWC numpy -> torch NCHW bicubic -> NHWC numpy."""
    t = torch.from_numpy(x).permute(0, 3, 1, 2)
    out = torch.nn.functional.interpolate(
        t, size=size, mode="bicubic", align_corners=False, antialias=antialias
    )
    return out.permute(0, 2, 3, 1).numpy()


@pytest.mark.parametrize("antialias", [False, True])
@pytest.mark.parametrize(
    "in_hw, out_hw",
    [
        ((256, 256), (224, 224)),  # REPA's encoder input
        ((37, 37), (16, 16)),  # DINOv2's 518-px position table -> 224 px
        ((14, 14), (16, 16)),  # MAE's 224-px table -> 256 px (upsampling)
        ((9, 13), (20, 5)),  # non-square, up along one axis, down along the other
    ],
)
def test_matches_torch_bicubic(in_hw, out_hw, antialias):
    x = np.random.default_rng(0).normal(size=(2, *in_hw, 3)).astype(np.float32)
    expected = torch_resize(x, out_hw, antialias)
    got = np.asarray(jax.jit(resize_bicubic, static_argnums=(1, 2))(x, out_hw, antialias))
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)


def test_differs_from_jax_image_resize():
    """The reason this module exists: jax.image.resize's cubic is another kernel."""
    x = np.random.default_rng(1).normal(size=(1, 256, 256, 3)).astype(np.float32)
    expected = torch_resize(x, (224, 224), antialias=False)
    theirs = np.asarray(jax.image.resize(x, (1, 224, 224, 3), "cubic", antialias=False))
    assert np.abs(theirs - expected).max() > 1e-2


def test_weights_rows_sum_to_one():
    for antialias in (False, True):
        w = bicubic_weights(37, 16, antialias)
        np.testing.assert_allclose(w.sum(axis=1), 1.0, atol=1e-6)


def test_same_size_is_identity_and_keeps_dtype():
    x = jnp.ones((1, 8, 8, 2), jnp.bfloat16)
    assert resize_bicubic(x, (8, 8)) is x
    assert resize_bicubic(x, (4, 4)).dtype == jnp.bfloat16


def test_resample_pos_embed_matches_timm_recipe():
    """timm's resample_abs_pos_embed: keep the CLS row, antialiased bicubic on the grid."""
    rng = np.random.default_rng(2)
    table = rng.normal(size=(1, 1 + 37 * 37, 8)).astype(np.float32)
    got = resample_pos_embed(table, 16)
    grid = torch.from_numpy(table[:, 1:]).reshape(1, 37, 37, 8).permute(0, 3, 1, 2)
    grid = torch.nn.functional.interpolate(grid, size=(16, 16), mode="bicubic", antialias=True)
    expected = np.concatenate([table[:, :1], grid.permute(0, 2, 3, 1).reshape(1, 256, 8)], 1)
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)
    np.testing.assert_array_equal(resample_pos_embed(table, 37), table)


def test_resample_pos_embed_rejects_non_square_table():
    with pytest.raises(ValueError, match="1 prefix rows plus a square grid"):
        resample_pos_embed(np.zeros((1, 11, 4), np.float32), 2)
