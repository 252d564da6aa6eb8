"""iREPA's conv projector and spatial z-score against a compact torch reference written here
from the published definitions (arXiv 2512.10794 and its README): torch's `nn.Conv2d(hidden,
z_dim, k, padding=k // 2)` on the tokens' grid, and (z - alpha z.mean(1)) / (z.std(1) + 1e-6)
with torch's default, unbiased std. Tolerance: float32 noise of sums over k * k * hidden
products (rtol 1e-5, atol 1e-5)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sara_jax.converters import mapping
from sara_jax.models.projector import ConvProjector
from sara_jax.objective.losses import spatial_zscore

torch = pytest.importorskip("torch")


def torch_conv_projector(weight, bias, tokens):
    """tokens (B, N, hidden) on their sqrt(N) x sqrt(N) grid through torch's Conv2d."""
    batch, n, hidden = tokens.shape
    side = int(round(n**0.5))
    layer = torch.nn.Conv2d(
        hidden, weight.shape[0], weight.shape[-1], padding=weight.shape[-1] // 2
    )
    with torch.no_grad():
        layer.weight.copy_(torch.from_numpy(weight))
        layer.bias.copy_(torch.from_numpy(bias))
        grid = torch.from_numpy(tokens).reshape(batch, side, side, hidden).permute(0, 3, 1, 2)
        out = layer(grid).permute(0, 2, 3, 1)
    return out.reshape(batch, n, -1).numpy()


def torch_zscore(z, alpha):
    z = torch.from_numpy(z)
    return ((z - alpha * z.mean(dim=1, keepdim=True)) / (z.std(dim=1, keepdim=True) + 1e-6)).numpy()


@pytest.mark.parametrize("kernel_size, tokens", [(1, 16), (3, 16), (3, 64), (5, 64)])
def test_conv_projector_equals_torch_conv2d(kernel_size, tokens):
    rng = np.random.default_rng(kernel_size + tokens)
    hidden, z_dim = 24, 12
    weight = rng.normal(size=(z_dim, hidden, kernel_size, kernel_size)).astype(np.float32)
    bias = rng.normal(size=(z_dim,)).astype(np.float32)
    h = rng.normal(size=(2, tokens, hidden)).astype(np.float32)
    params = {"conv": {"kernel": jnp.asarray(mapping.conv(weight)), "bias": jnp.asarray(bias)}}
    ours = ConvProjector(kernel_size=kernel_size, z_dim=z_dim).apply({"params": params}, h)
    np.testing.assert_allclose(ours, torch_conv_projector(weight, bias, h), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("alpha", [0.0, 0.6, 1.0])
def test_spatial_zscore_equals_torch(alpha):
    rng = np.random.default_rng(int(alpha * 10))
    z = (3.0 + 2.0 * rng.normal(size=(3, 256, 32))).astype(np.float32)
    np.testing.assert_allclose(
        spatial_zscore(jnp.asarray(z), alpha), torch_zscore(z, alpha), rtol=1e-5, atol=1e-5
    )


def test_conv_projector_init_is_torchs_default_conv_init():
    # iREPA keeps nn.Conv2d's own init: weight and bias uniform in +-1/sqrt(k * k * hidden).
    hidden, k = 64, 3
    params = ConvProjector(kernel_size=k, z_dim=256).init(
        jax.random.key(0), jnp.zeros((1, 16, hidden))
    )["params"]["conv"]
    bound = 1 / np.sqrt(k * k * hidden)
    layer = torch.nn.Conv2d(hidden, 256, k, padding=1)
    for ours, theirs in ((params["kernel"], layer.weight), (params["bias"], layer.bias)):
        ours, theirs = np.asarray(ours), theirs.detach().numpy()
        assert np.abs(ours).max() <= bound and np.abs(theirs).max() <= bound
        np.testing.assert_allclose(ours.std(), theirs.std(), rtol=0.15)
