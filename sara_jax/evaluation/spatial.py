"""Spatial-structure metrics of a token grid, as defined by iREPA (Singh et al. 2025,
arXiv 2512.10794, code github.com/End2End-Diffusion/iREPA, `metrics/spatial_metrics.py`).

A token set u: (B, T, D) lies on an H x W grid in row-major order (T = H * W). Every metric is
computed per image on L2-normalised tokens in float32; distances are Manhattan distances between
grid cells, and "pairs" are ordered pairs (i, j), i != j, unless said otherwise.
  LDS   local-vs-distant similarity: how much more alike 4-neighbours are than far-apart tokens.
  CDS   correlation-decay slope: how fast the mean cosine falls as the distance grows (minus
        the least-squares slope over d = 1..dmax).
  SRSS  semantic-region self-similarity: how much more alike a foreground token is to its
        foreground neighbours than to far background tokens (needs a foreground mask).
  RMSC  RMS spatial contrast: how spread out the unit tokens are around their mean.
Higher means more spatial structure for the first three; RMSC measures token diversity.

The defaults (far_dist=6, dmax=8, d_pos=1, d_pos_min=1, d_neg=6) and the edge cases (an empty
far set, a grid with fewer than two distances, images without a valid SRSS anchor) follow
iREPA's code. The grid is static, so distance matrices are numpy constants built at trace time.

No foreground-mask helper for the shapes data: its background is a randomly tinted vertical
gradient, not one colour, so "pixels differ from the background" has no single reference.
"""

import math
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from sara_jax.io.errors import InputError
from sara_jax.objective.losses import l2_normalize

# iREPA normalises with torch's F.normalize(eps=1e-8) in LDS, CDS and RMSC, but with the
# default eps (1e-12, which losses.l2_normalize uses) in SRSS. The two differ only for tokens
# whose norm is below 1e-8, which float32 can hold, so each metric uses its own eps.
_METRIC_EPS = 1e-8

# Cosines in float32 (DESIGN's numerics): the default matmul precision on GPU (TF32) and TPU
# (bf16 passes) keeps about 3 significant digits, coarser than the gaps these metrics measure.
_HIGHEST = jax.lax.Precision.HIGHEST


def token_grid(num_tokens: int, grid: tuple[int, int] | None = None) -> tuple[int, int]:
    """The (H, W) grid of `num_tokens` tokens in row-major order.

    Args:
      num_tokens: T.
      grid: (H, W) with H * W = T, or None for a square grid.
    Raises: InputError (one line) when T is not a square and no grid is given, or the grid's
      cells do not number T.
    """
    if grid is None:
        side = math.isqrt(num_tokens)
        if side * side != num_tokens:
            raise InputError(
                f"{num_tokens} tokens do not form a square grid; pass grid=(H, W) with "
                f"H * W = {num_tokens}"
            )
        return side, side
    height, width = (int(n) for n in grid)
    if height < 1 or width < 1 or height * width != num_tokens:
        raise InputError(
            f"grid {tuple(grid)} does not fit {num_tokens} tokens; expected positive (H, W) "
            f"with H * W = {num_tokens}"
        )
    return height, width


def _manhattan(grid: tuple[int, int]) -> np.ndarray:
    """(T, T) int32 Manhattan distances between the cells of a row-major H x W grid."""
    rows, cols = np.divmod(np.arange(grid[0] * grid[1]), grid[1])
    return (np.abs(rows[:, None] - rows[None, :]) + np.abs(cols[:, None] - cols[None, :])).astype(
        np.int32
    )


def _unit(u: jax.Array, eps: float) -> jax.Array:
    """u / max(||u||, eps) along the last axis, in float32."""
    u = u.astype(jnp.float32)
    norm = jnp.sqrt(jnp.sum(u * u, axis=-1, keepdims=True))
    return u / jnp.maximum(norm, eps)


def _gram(unit: jax.Array) -> jax.Array:
    """Cosines of unit tokens: (B, T, D) -> (B, T, T)."""
    return jnp.einsum("btd,bsd->bts", unit, unit, precision=_HIGHEST)


def _masked_mean(gram: jax.Array, mask: np.ndarray) -> jax.Array:
    """Mean of gram (B, T, T) over the entries where the static mask (T, T) is set -> (B,);
    the denominator is at least 1, so an empty mask gives 0 (iREPA's clamp)."""
    weights = mask.astype(np.float32) / max(int(mask.sum()), 1)
    return jnp.einsum("bts,ts->b", gram, weights, precision=_HIGHEST)


@partial(jax.jit, static_argnames=("grid", "far_dist"))
def lds(u: jax.Array, grid: tuple[int, int] | None = None, far_dist: int = 6) -> jax.Array:
    """Local-vs-distant similarity: the mean cosine of 4-neighbour pairs (each unordered pair
    once) minus the mean cosine of pairs at distance >= far_dist (0 when there are none).

    Args:
      u: (B, T, D) tokens in row-major grid order.
      grid: (H, W), or None for a square grid.
      far_dist: the smallest distance of a far pair.
    Returns: (B,) float32; NaN on a 1 x 1 grid, which has no neighbours.
    """
    height, width = token_grid(u.shape[1], grid)
    unit = _unit(u, _METRIC_EPS)
    cells = unit.reshape(u.shape[0], height, width, u.shape[2])
    vertical = jnp.sum(cells[:, 1:] * cells[:, :-1], axis=(1, 2, 3))
    horizontal = jnp.sum(cells[:, :, 1:] * cells[:, :, :-1], axis=(1, 2, 3))
    num_local = (height - 1) * width + height * (width - 1)
    local = (vertical + horizontal) / num_local if num_local else jnp.full(u.shape[0], jnp.nan)
    dist = _manhattan((height, width))
    far = _masked_mean(_gram(unit), (dist >= far_dist) & (dist > 0))
    return local - far


@partial(jax.jit, static_argnames=("grid", "dmax"))
def cds(u: jax.Array, grid: tuple[int, int] | None = None, dmax: int = 8) -> jax.Array:
    """Correlation-decay slope: -slope of the least-squares line through (d, mean cosine of the
    pairs at distance exactly d) for the d in 1..dmax that the grid has.

    Args:
      u: (B, T, D) tokens in row-major grid order.
      grid: (H, W), or None for a square grid.
      dmax: the largest distance in the fit.
    Returns: (B,) float32; 0 when fewer than two distances are present (no slope to fit).
    """
    height, width = token_grid(u.shape[1], grid)
    dist = _manhattan((height, width))
    present = [d for d in range(1, dmax + 1) if (dist == d).any()]
    if len(present) < 2:
        return jnp.zeros(u.shape[0], jnp.float32)
    # One weight matrix per distance, each row summing to 1: a single contraction gives all
    # the per-distance means.
    weights = np.stack([(dist == d) / np.sum(dist == d) for d in present]).astype(np.float32)
    gram = _gram(_unit(u, _METRIC_EPS))
    means = jnp.einsum("bts,kts->bk", gram, weights, precision=_HIGHEST)  # (B, K)
    centred = np.asarray(present, np.float32) - np.mean(present, dtype=np.float32)
    # The centred abscissae sum to zero, so the slope needs no centring of the means.
    slope = jnp.einsum("bk,k->b", means, centred, precision=_HIGHEST) / np.sum(centred**2)
    return -slope


@partial(jax.jit, static_argnames=("grid", "d_pos", "d_pos_min", "d_neg"))
def srss(
    u: jax.Array,
    grid: tuple[int, int] | None = None,
    *,
    masks: jax.Array,
    d_pos: int = 1,
    d_pos_min: int = 1,
    d_neg: int = 6,
) -> jax.Array:
    """Semantic-region self-similarity: for each foreground anchor, the mean cosine to the
    foreground tokens at distance in [d_pos_min, d_pos] minus the mean cosine to the background
    tokens at distance >= d_neg; averaged over the anchors that have both.

    Args:
      u: (B, T, D) tokens in row-major grid order.
      grid: (H, W), or None for a square grid.
      masks: (B, T) bool, True on foreground tokens.
      d_pos, d_pos_min: the distance window of the foreground neighbours.
      d_neg: the smallest distance of a background token.
    Returns: (B,) float32; NaN for an image with fewer than 2 foreground tokens, no background
      token, or no anchor with both kinds of neighbours (a batch mean should skip these).
    """
    batch, num_tokens, _ = u.shape
    if masks.shape != (batch, num_tokens):
        raise InputError(f"masks must have shape {(batch, num_tokens)}, got {masks.shape}")
    dist = _manhattan(token_grid(num_tokens, grid))
    fg = masks.astype(bool)
    # iREPA's SRSS normalises with F.normalize's default eps, as l2_normalize does.
    unit = l2_normalize(u)
    gram = _gram(unit)
    pairs_fg = fg[:, :, None] & fg[:, None, :]
    pairs_bg = fg[:, :, None] & ~fg[:, None, :]
    pos = pairs_fg & ((dist >= d_pos_min) & (dist <= d_pos))
    neg = pairs_bg & (dist >= d_neg)
    pos_count = jnp.sum(pos, axis=2)
    neg_count = jnp.sum(neg, axis=2)
    pos_mean = jnp.sum(jnp.where(pos, gram, 0.0), axis=2) / jnp.maximum(pos_count, 1)
    neg_mean = jnp.sum(jnp.where(neg, gram, 0.0), axis=2) / jnp.maximum(neg_count, 1)
    valid = fg & (pos_count > 0) & (neg_count > 0)
    num_valid = jnp.sum(valid, axis=1)
    delta = jnp.sum(jnp.where(valid, pos_mean - neg_mean, 0.0), axis=1) / jnp.maximum(num_valid, 1)
    num_fg = jnp.sum(fg, axis=1)
    defined = (num_fg >= 2) & (num_fg < num_tokens) & (num_valid > 0)
    return jnp.where(defined, delta, jnp.nan)


@partial(jax.jit, static_argnames=("grid",))
def rmsc(u: jax.Array, grid: tuple[int, int] | None = None) -> jax.Array:
    """RMS spatial contrast: sqrt(mean_t ||x_t - mean_s x_s||^2) for the unit tokens x_t.

    Args:
      u: (B, T, D) tokens.
      grid: (H, W), or None for a square grid; only checked against T, as the metric does not
        depend on where tokens are.
    Returns: (B,) float32; 0 when all tokens point the same way.
    """
    token_grid(u.shape[1], grid)
    unit = _unit(u, _METRIC_EPS)
    centred = unit - jnp.mean(unit, axis=1, keepdims=True)
    return jnp.sqrt(jnp.mean(jnp.sum(centred * centred, axis=-1), axis=1))


def spatial_metrics(
    tokens: dict[str, jax.Array],
    masks: jax.Array | None = None,
    grid: tuple[int, int] | None = None,
) -> dict[str, float]:
    """Batch means of every metric for every token set: {f"{name}/{metric}": value}.

    Args:
      tokens: name -> (B, T, D) tokens in row-major grid order.
      masks: (B, T) bool foreground masks; SRSS is computed only when given.
      grid: (H, W) for every token set, or None for square grids.
    Returns: floats keyed "name/lds", "name/cds", "name/rmsc" (and "name/srss"). Each is a
      nanmean over the images, as in iREPA's runner, so images where a metric is undefined
      (NaN) are skipped; NaN when it is undefined for all.
    """
    grid = None if grid is None else tuple(grid)
    out = {}
    for name, u in tokens.items():
        values = {"lds": lds(u, grid), "cds": cds(u, grid), "rmsc": rmsc(u, grid)}
        if masks is not None:
            values["srss"] = srss(u, grid, masks=masks)
        for metric, per_image in values.items():
            out[f"{name}/{metric}"] = float(jnp.nanmean(per_image))
    return out
