"""sara_jax.evaluation.spatial against a torch reference of iREPA's spatial-structure metrics
(Singh et al. 2025, arXiv 2512.10794), written here from the published definitions: pairs are
enumerated from grid coordinates, the line is fitted by least squares, SRSS visits each anchor
in turn, RMSC uses mean ||x||^2 - ||mean x||^2, all in float64. The JAX metrics (float32) must
agree to float32 noise: rtol 1e-5, atol 1e-6 (most values are O(0.01 - 1)).
"""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from sara_jax.evaluation import spatial  # noqa: E402

RTOL, ATOL = 1e-5, 1e-6


def grid_distances(height: int, width: int):
    """(T, T) float64 Manhattan distances of the row-major cells."""
    cells = torch.cartesian_prod(torch.arange(height), torch.arange(width)).double()
    return torch.cdist(cells, cells, p=1)


def unit(u, eps: float):
    return u / u.norm(dim=-1, keepdim=True).clamp_min(eps)


def ref_lds(u, height, width, far_dist=6):
    x = unit(u.double(), 1e-8)
    gram = x @ x.transpose(1, 2)
    dist = grid_distances(height, width)
    upper = torch.ones_like(dist, dtype=torch.bool).triu(1)
    local = gram[:, (dist == 1) & upper].mean(1)  # each neighbour pair once
    far_pairs = dist >= max(far_dist, 1)
    far = gram[:, far_pairs].mean(1) if far_pairs.any() else torch.zeros(len(u))
    return local - far


def ref_cds(u, height, width, dmax=8):
    x = unit(u.double(), 1e-8)
    gram = x @ x.transpose(1, 2)
    dist = grid_distances(height, width)
    ds = [d for d in range(1, dmax + 1) if (dist == d).any()]
    means = torch.stack([gram[:, dist == d].mean(1) for d in ds], 1)  # (B, K)
    design = torch.stack([torch.tensor(ds).double(), torch.ones(len(ds)).double()], 1)
    fit = torch.linalg.lstsq(design, means.T).solution  # (2, B): slope, intercept
    return -fit[0]


def ref_srss(u, height, width, masks, d_pos=1, d_pos_min=1, d_neg=6):
    x = unit(u.double(), 1e-12)
    dist = grid_distances(height, width)
    out = []
    for image, fg in zip(x, masks.bool(), strict=True):
        deltas = []
        for anchor in torch.nonzero(fg).flatten():
            d = dist[anchor]
            near = fg & (d >= d_pos_min) & (d <= d_pos)
            far_bg = ~fg & (d >= d_neg)
            if near.any() and far_bg.any():
                cos = image @ image[anchor]
                deltas.append(cos[near].mean() - cos[far_bg].mean())
        defined = fg.sum() >= 2 and (~fg).any() and deltas
        out.append(torch.stack(deltas).mean() if defined else torch.tensor(float("nan")))
    return torch.stack(out).double()


def ref_rmsc(u):
    x = unit(u.double(), 1e-8)
    spread = x.square().sum(-1).mean(1) - x.mean(1).square().sum(-1)
    return spread.clamp_min(0).sqrt()


def tokens_and_masks(batch: int, height: int, width: int, dim: int, seed: int):
    """Tokens with spatial structure (random walks along rows and columns plus white noise, so
    the metrics are far from 0) and per-image foreground masks: a random rectangle, random
    cells, and one all-foreground image (SRSS undefined)."""
    gen = torch.Generator().manual_seed(seed)
    steps = torch.randn(batch, height, width, dim, generator=gen)
    walk = steps.cumsum(1) / height**0.5 + steps.cumsum(2) / width**0.5
    u = (walk + 0.5 * torch.randn(batch, height, width, dim, generator=gen)).reshape(
        batch, height * width, dim
    )
    masks = torch.zeros(batch, height, width, dtype=torch.bool)
    for b in range(batch):
        kind = b % 3
        if kind == 0:
            r, c = torch.randint(0, height // 2, (2,), generator=gen).tolist()
            masks[b, r : r + height // 2, c : c + width // 3] = True
        elif kind == 1:
            masks[b] = torch.rand(height, width, generator=gen) < 0.4
        else:
            masks[b] = True
    return u, masks.reshape(batch, height * width)


def assert_close(jax_value, torch_value):
    np.testing.assert_allclose(
        np.asarray(jax_value, np.float64), torch_value.numpy(), rtol=RTOL, atol=ATOL
    )


@pytest.mark.parametrize("batch", [1, 3, 4])
@pytest.mark.parametrize("grid", [(8, 8), (16, 16), (6, 10)])
def test_metrics_match_the_torch_reference(batch, grid):
    height, width = grid
    u, masks = tokens_and_masks(batch, height, width, 32, seed=batch * 100 + height)
    u_np, masks_np = u.numpy(), masks.numpy()
    assert_close(spatial.lds(u_np, grid), ref_lds(u, height, width))
    assert_close(spatial.cds(u_np, grid), ref_cds(u, height, width))
    assert_close(spatial.rmsc(u_np, grid), ref_rmsc(u))
    assert_close(spatial.srss(u_np, grid, masks=masks_np), ref_srss(u, height, width, masks))


@pytest.mark.parametrize(
    "kwargs",
    [{"far_dist": 3, "dmax": 4, "d_neg": 3}, {"far_dist": 10, "dmax": 12, "d_pos": 2, "d_neg": 9}],
)
def test_non_default_distances_match_the_torch_reference(kwargs):
    u, masks = tokens_and_masks(3, 16, 16, 32, seed=7)
    u_np, masks_np = u.numpy(), masks.numpy()
    srss_kwargs = {k: v for k, v in kwargs.items() if k in ("d_pos", "d_neg")}
    assert_close(
        spatial.lds(u_np, (16, 16), far_dist=kwargs["far_dist"]),
        ref_lds(u, 16, 16, kwargs["far_dist"]),
    )
    assert_close(
        spatial.cds(u_np, (16, 16), dmax=kwargs["dmax"]), ref_cds(u, 16, 16, kwargs["dmax"])
    )
    assert_close(
        spatial.srss(u_np, (16, 16), masks=masks_np, **srss_kwargs),
        ref_srss(u, 16, 16, masks, **srss_kwargs),
    )
