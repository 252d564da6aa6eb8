"""PyTorch's resampling, exactly: `F.interpolate(..., mode="bicubic")` with or without
`antialias`, and mode="bilinear" (the FID Inception's input), align_corners=False.

`jax.image.resize` uses Keys' kernel with a = -0.5 and no border clamping; torch's plain bicubic
uses a = -0.75 and clamps indices at the border, and its antialiased variant (PIL's filter,
a = -0.5) widens the kernel by the downsampling factor and renormalises at the borders. REPA's
encoder inputs and timm's position-table resampling depend on these exact kernels.

Resampling is separable and linear, so each axis is a (out, in) weight matrix built once in
numpy (the sizes are static) and applied as a matmul: exact, and fast on TPU and GPU.
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np


def _cubic(x: np.ndarray, a: float) -> np.ndarray:
    """Keys' cubic convolution kernel W(x) with parameter a (support |x| < 2)."""
    x = np.abs(x)
    a = x.dtype.type(a)
    near = ((a + 2) * x - (a + 3)) * x * x + 1
    far = ((a * x - 5 * a) * x + 8 * a) * x - 4 * a
    return np.where(x <= 1, near, np.where(x < 2, far, 0.0))


@functools.cache
def bicubic_weights(in_size: int, out_size: int, antialias: bool) -> np.ndarray:
    """The (out_size, in_size) matrix of torch's 1-D bicubic resampling along one axis.

    Follows ATen's upsample_bicubic2d (a = -0.75, taps at floor(src) - 1 .. + 2 clamped into
    the input) and _upsample_bicubic2d_aa (a = -0.5, support 2 * max(scale, 1), weights over the
    in-range taps normalised to sum to one), with scale = in_size / out_size.
    """
    # Positions and weights in float32 arithmetic, as ATen computes them: float64 would shift
    # the sampling points by ~1e-5 of a pixel near the far border and the output by ~1e-4.
    f32 = np.float32
    scale = f32(in_size) / f32(out_size)
    weights = np.zeros((out_size, in_size), f32)
    rows = np.arange(out_size)
    if not antialias:
        src = scale * (rows.astype(f32) + f32(0.5)) - f32(0.5)
        base = np.floor(src)
        frac = src - base
        for tap in range(-1, 3):
            index = np.clip(base + tap, 0, in_size - 1).astype(int)
            np.add.at(weights, (rows, index), _cubic(frac - f32(tap), -0.75))
        return weights
    support = f32(2.0) * max(scale, f32(1.0))
    inv_scale = f32(1.0) / scale if scale >= 1.0 else f32(1.0)
    for i in rows:
        center = scale * (f32(i) + f32(0.5))
        lo = max(int(center - support + f32(0.5)), 0)
        hi = min(int(center + support + f32(0.5)), in_size)
        taps = np.arange(lo, hi).astype(f32)
        w = _cubic((taps - center + f32(0.5)) * inv_scale, -0.5)
        weights[i, lo:hi] = w / w.sum(dtype=f32)
    return weights


def resize_bicubic(images: jax.Array, size: tuple[int, int], antialias: bool = False) -> jax.Array:
    """Resizes channels-last images as torch's bicubic `F.interpolate(x, size)` does.

    Args:
      images: (..., H, W, C) float.
      size: (out_H, out_W).
      antialias: torch's `antialias=True` (timm's position-table resampling), else plain
        bicubic (REPA's encoder inputs).
    Returns: (..., out_H, out_W, C) in the input's dtype, computed in float32.
    """
    height, width = images.shape[-3], images.shape[-2]
    if (height, width) == tuple(size):
        return images
    rows = bicubic_weights(height, size[0], antialias)
    cols = bicubic_weights(width, size[1], antialias)
    return _resample(images, rows, cols).astype(images.dtype)


def _resample(images: jax.Array, rows: np.ndarray, cols: np.ndarray) -> jax.Array:
    """(..., H, W, C) -> (..., out_H, out_W, C) float32 through (out, in) weight matrices."""
    x = images.astype(jnp.float32)
    # HIGHEST: TPUs and TF32 GPUs otherwise round float32 matmul inputs to ~3 digits.
    highest = jax.lax.Precision.HIGHEST
    x = jnp.einsum("oh,...hwc->...owc", jnp.asarray(rows, jnp.float32), x, precision=highest)
    return jnp.einsum("pw,...owc->...opc", jnp.asarray(cols, jnp.float32), x, precision=highest)


@functools.cache
def bilinear_weights(in_size: int, out_size: int) -> np.ndarray:
    """The (out_size, in_size) matrix of torch's 1-D bilinear resampling along one axis,
    `F.interpolate(mode="bilinear", align_corners=False, antialias=False)`.

    Follows ATen's upsample_bilinear2d: source position scale * (i + 0.5) - 0.5 with
    scale = in_size / out_size, clamped below at 0; taps floor(src) and the next pixel
    (the last pixel alone at the far border), weighted 1 - frac and frac, in float32 as
    ATen computes them. ATen's compiled kernel fuses the multiply-subtract into one FMA, so
    the position is rounded to float32 once (float64 arithmetic on the exact float32
    operands reproduces that); rounding twice moves weights by up to ~1.5e-5. The result
    equals torch 2.13's CPU weights bit for bit (tests/parity/test_inception.py).
    """
    f32 = np.float32
    scale = f32(in_size) / f32(out_size)
    rows = np.arange(out_size)
    src = (np.float64(scale) * (rows + 0.5) - 0.5).astype(f32)
    src = np.maximum(src, f32(0.0))
    lo = np.minimum(np.floor(src).astype(int), in_size - 1)
    hi = np.minimum(lo + 1, in_size - 1)
    frac = (src - lo.astype(f32)).astype(f32)
    weights = np.zeros((out_size, in_size), f32)
    np.add.at(weights, (rows, lo), f32(1.0) - frac)
    np.add.at(weights, (rows, hi), frac)
    return weights


@functools.cache
def legacy_bilinear_weights(in_size: int, out_size: int) -> np.ndarray:
    """The (out_size, in_size) matrix of TF1's `ResizeBilinear` (align_corners=False,
    half_pixel_centers=False), the resize inside the 2015 Inception graph of ADM's evaluator.

    Source position i * scale, scale = in_size / out_size, without the half-pixel offset; taps
    floor(src) and min(ceil(src), in_size - 1), weighted 1 - frac and frac, in float32 as TF's
    LegacyScaler computes them.
    """
    f32 = np.float32
    scale = f32(in_size) / f32(out_size)
    rows = np.arange(out_size)
    src = (rows.astype(f32) * scale).astype(f32)
    lo = np.floor(src).astype(int)
    hi = np.minimum(np.ceil(src).astype(int), in_size - 1)
    frac = (src - lo.astype(f32)).astype(f32)
    weights = np.zeros((out_size, in_size), f32)
    np.add.at(weights, (rows, lo), f32(1.0) - frac)
    np.add.at(weights, (rows, hi), frac)
    return weights


def resize_bilinear(images: jax.Array, size: tuple[int, int], half_pixel: bool = True) -> jax.Array:
    """Bilinear resize of channels-last float images (..., H, W, C) -> (..., out_H, out_W, C),
    in float32: torch's `F.interpolate(mode="bilinear", align_corners=False)` (half_pixel) or
    TF1's legacy `ResizeBilinear` (not half_pixel)."""
    height, width = images.shape[-3], images.shape[-2]
    if (height, width) == tuple(size):
        return images.astype(jnp.float32)
    weights = bilinear_weights if half_pixel else legacy_bilinear_weights
    return _resample(images, weights(height, size[0]), weights(width, size[1]))


def resample_pos_embed(table: np.ndarray, grid: int, num_prefix_tokens: int = 1) -> np.ndarray:
    """Resamples a ViT position table to a grid x grid patch grid, as timm's
    `resample_abs_pos_embed` defaults do (bicubic, antialias=True); prefix rows are kept.

    Args:
      table: (1, P + S * S, D), P prefix (CLS) rows then an S x S grid in row-major order.
    Returns: float32 (1, P + grid * grid, D).
    """
    num_grid = table.shape[1] - num_prefix_tokens
    side = math.isqrt(num_grid)
    if side * side != num_grid:
        raise ValueError(
            f"position table of {table.shape[1]} rows is not {num_prefix_tokens} prefix rows "
            "plus a square grid"
        )
    table = np.asarray(table, np.float32)
    if side == grid:
        return table
    prefix, patches = table[:, :num_prefix_tokens], table[:, num_prefix_tokens:]
    patches = patches.reshape(side, side, -1)
    patches = resize_bicubic(jnp.asarray(patches), (grid, grid), antialias=True)
    patches = np.asarray(patches).reshape(1, grid * grid, -1)
    return np.concatenate([prefix, patches], axis=1)
