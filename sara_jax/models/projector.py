"""The projector that maps SiT hidden states into the encoder's feature space: REPA's per-token
MLP (`Projector`) or iREPA's convolution over the token grid (`ConvProjector`);
`make_projector` picks one from `config.projector`."""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

# What `config.projector.kind` can name.
KINDS = ("mlp", "conv")


class Projector(nn.Module):
    """Per-token 3-layer SiLU MLP: hidden -> width -> width -> z_dim.

    Attributes:
      width: inner width (2048 in REPA/SARA).
      z_dim: the encoder's feature size (768 for DINOv2-B).
      dtype: compute dtype of the matmuls; the output is float32 for the cosine losses.
    """

    width: int
    z_dim: int
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, h: jax.Array) -> jax.Array:
        """h: (B, N, hidden) -> h_den: (B, N, z_dim) float32."""
        for i, features in enumerate((self.width, self.width, self.z_dim)):
            if i:
                h = nn.silu(h)
            h = nn.Dense(
                features,
                kernel_init=nn.initializers.xavier_uniform(),
                dtype=self.dtype,
                name=f"fc{i + 1}",
            )(h)
        return h.astype(jnp.float32)


def token_grid(num_tokens: int) -> int:
    """The side of the square grid that N tokens fill (the SiT's patches, row-major).

    Raises ValueError at trace time (a module's shapes are static): a SiT's token count is
    always a square (`_check_tokens` of the config), so another one is a caller's bug.
    """
    side = math.isqrt(num_tokens)
    if side * side != num_tokens:
        raise ValueError(f"the conv projector needs a square token grid, got N={num_tokens} tokens")
    return side


class ConvProjector(nn.Module):
    """iREPA's projector: one k x k convolution (stride 1, padding k // 2, with bias) over the
    tokens laid back out on their H x W grid, hidden -> z_dim. Neighbouring tokens mix, which
    the per-token MLP cannot do; that is iREPA's first change to REPA.

    Attributes:
      kernel_size: k, odd, so that padding k // 2 keeps the grid's size.
      z_dim: the encoder's feature size.
      dtype: compute dtype of the convolution; the output is float32 for the cosine losses.
    """

    kernel_size: int
    z_dim: int
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, h: jax.Array) -> jax.Array:
        """h: (B, N, hidden), N = H * W tokens in row-major order -> h_den: (B, N, z_dim)
        float32."""
        batch, tokens, hidden = h.shape
        side = token_grid(tokens)
        k, pad = self.kernel_size, self.kernel_size // 2
        grid = h.reshape(batch, side, side, hidden)  # The SiT's patch order is row-major.
        # iREPA leaves its Conv2d at torch's default init: weight and bias U(+-1/sqrt(fan_in)).
        bound = 1.0 / math.sqrt(k * k * hidden)
        out = nn.Conv(
            self.z_dim,
            (k, k),
            padding=((pad, pad), (pad, pad)),  # torch's padding=k//2: zeros, same grid.
            dtype=self.dtype,
            kernel_init=nn.initializers.variance_scaling(1 / 3, "fan_in", "uniform"),
            bias_init=lambda key, shape, dtype=jnp.float32: jax.random.uniform(
                key, shape, dtype, -bound, bound
            ),
            name="conv",
        )(grid)
        return out.reshape(batch, tokens, self.z_dim).astype(jnp.float32)


def make_projector(
    projector: ml_collections.ConfigDict, z_dim: int, dtype: jnp.dtype
) -> Projector | ConvProjector:
    """The module `config.projector` describes ("mlp" or "conv"), to the encoder's width z_dim."""
    if projector.kind == "mlp":
        return Projector(width=projector.width, z_dim=z_dim, dtype=dtype)
    if projector.kind == "conv":
        return ConvProjector(kernel_size=projector.kernel_size, z_dim=z_dim, dtype=dtype)
    raise ValueError(f"config.projector.kind must be one of {KINDS}, got {projector.kind!r}")
