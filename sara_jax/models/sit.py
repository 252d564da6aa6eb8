"""SiT: the scalable interpolant transformer (DiT backbone, adaLN-Zero) as SARA trains it.

Layout and initialisation follow DiT/SiT/REPA so that their PyTorch checkpoints convert by
renaming: xavier-uniform Dense layers with zero bias, N(0, 0.02) label table and timestep MLP,
zero-initialised adaLN modulations and output layer, fixed 2D sin-cos position embedding.
With `learn_sigma` it is DiT's network (the same backbone, a 2C-channel output head).
Tensors are channels-last: images (B, H, W, C), tokens (B, N, D).
"""

import math
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from sara_jax.models.attention import attention

xavier = nn.initializers.xavier_uniform()
normal_002 = nn.initializers.normal(stddev=0.02)
zeros = nn.initializers.zeros

# SiT presets: (depth, hidden_size, num_heads), as in the DiT/SiT papers.
PRESETS = {
    "S": (12, 384, 6),
    "B": (12, 768, 12),
    "L": (24, 1024, 16),
    "XL": (28, 1152, 16),
}


def sincos_pos_embed_2d(dim: int, grid: int) -> np.ndarray:
    """Fixed 2D sin-cos position embedding of a grid x grid patch map, row-major.

    The first half of the channels encodes the column index, the second half the row index,
    each as [sin, cos] over `dim // 4` frequencies 1 / 10000^(k / (dim/4)) (MAE's convention).

    Returns: (grid * grid, dim) float32.
    """
    if dim % 4:
        raise ValueError(
            f"hidden_size must be divisible by 4 for the 2D sin-cos embedding, got {dim}"
        )
    omega = 1.0 / 10000 ** (np.arange(dim // 4, dtype=np.float64) / (dim / 4))
    rows, cols = np.meshgrid(np.arange(grid), np.arange(grid), indexing="ij")

    def embed_1d(pos: np.ndarray) -> np.ndarray:
        angles = np.outer(pos.reshape(-1), omega)
        return np.concatenate([np.sin(angles), np.cos(angles)], axis=1)

    return np.concatenate([embed_1d(cols), embed_1d(rows)], axis=1).astype(np.float32)


def timestep_frequencies(t: jax.Array, dim: int, max_period: float = 10000.0) -> jax.Array:
    """Sinusoidal features of t in [0, 1] (fed as is, no x1000 as in SiT/REPA).

    Args:
      t: (B,) times.
    Returns: (B, dim) float32 features [cos(t * f_k), sin(t * f_k)].
    """
    half = dim // 2
    freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)
    args = t.astype(jnp.float32)[:, None] * freqs[None]
    return jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=-1)


def fsdp_saveable(primitive: object, *_, **params: object) -> bool:
    """The remat policy of a block whose params are gathered (FSDP): keep the matmuls' outputs
    (and a fused attention's, a custom-VJP call), recompute the elementwise work in between and
    gather the params again (the custom-VJP gathers of `training.sharding.gather_for_compute`).

    No matmul runs twice. Measured ahead of time for a v5p (SiT-B/2, 8 images per chip), this
    holds 1.78 GiB per chip where keeping all but the gathers held 3.03 (docs/pods.md).
    """
    if primitive is lax.dot_general_p:
        return True
    call = params.get("call_jaxpr")
    return call is not None and not any(e.primitive is lax.all_gather_p for e in call.jaxpr.eqns)


def modulate(x: jax.Array, shift: jax.Array, scale: jax.Array) -> jax.Array:
    """adaLN modulation x * (1 + scale) + shift, with (B, D) shift/scale over (B, N, D) x."""
    return x * (1 + scale[:, None]) + shift[:, None]


def layer_norm(x: jax.Array) -> jax.Array:
    """Affine-free LayerNorm (eps 1e-6) in float32, as SiT's blocks use before modulation."""
    return nn.LayerNorm(epsilon=1e-6, use_bias=False, use_scale=False, dtype=jnp.float32)(x)


class TimestepEmbedder(nn.Module):
    """t (B,) -> (B, hidden): sinusoidal features then a SiLU MLP."""

    hidden_size: int
    frequency_dim: int = 256
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, t: jax.Array) -> jax.Array:
        h = timestep_frequencies(t, self.frequency_dim)
        h = nn.Dense(self.hidden_size, kernel_init=normal_002, dtype=self.dtype, name="fc1")(h)
        h = nn.silu(h)
        return nn.Dense(self.hidden_size, kernel_init=normal_002, dtype=self.dtype, name="fc2")(h)


class Attention(nn.Module):
    """Multi-head self-attention with a fused qkv projection (timm layout)."""

    hidden_size: int
    num_heads: int
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        batch, tokens, _ = x.shape
        head_dim = self.hidden_size // self.num_heads
        qkv = nn.Dense(3 * self.hidden_size, kernel_init=xavier, dtype=self.dtype, name="qkv")(x)
        q, k, v = jnp.moveaxis(qkv.reshape(batch, tokens, 3, self.num_heads, head_dim), 2, 0)
        out = attention(q, k, v)
        out = out.reshape(batch, tokens, self.hidden_size)
        return nn.Dense(self.hidden_size, kernel_init=xavier, dtype=self.dtype, name="proj")(out)


class Mlp(nn.Module):
    """Dense -> tanh-GELU -> Dense."""

    hidden_size: int
    mlp_ratio: float
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        width = int(self.hidden_size * self.mlp_ratio)
        x = nn.Dense(width, kernel_init=xavier, dtype=self.dtype, name="fc1")(x)
        x = nn.gelu(x, approximate=True)
        return nn.Dense(self.hidden_size, kernel_init=xavier, dtype=self.dtype, name="fc2")(x)


class SiTBlock(nn.Module):
    """Transformer block with adaLN-Zero conditioning on c (B, D)."""

    hidden_size: int
    num_heads: int
    mlp_ratio: float
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, c: jax.Array) -> jax.Array:
        modulation = nn.Dense(
            6 * self.hidden_size, kernel_init=zeros, dtype=self.dtype, name="adaLN_modulation"
        )(nn.silu(c))
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = jnp.split(
            modulation.astype(jnp.float32), 6, axis=-1
        )
        attn = Attention(self.hidden_size, self.num_heads, self.dtype, name="attn")
        mlp = Mlp(self.hidden_size, self.mlp_ratio, self.dtype, name="mlp")
        x = x + gate_msa[:, None] * attn(modulate(layer_norm(x), shift_msa, scale_msa))
        x = x + gate_mlp[:, None] * mlp(modulate(layer_norm(x), shift_mlp, scale_mlp))
        return x


class FinalLayer(nn.Module):
    """adaLN-modulated LayerNorm then a zero-initialised Dense to p*p*C values per token."""

    hidden_size: int
    patch_size: int
    out_channels: int
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, c: jax.Array) -> jax.Array:
        modulation = nn.Dense(
            2 * self.hidden_size, kernel_init=zeros, dtype=self.dtype, name="adaLN_modulation"
        )(nn.silu(c))
        shift, scale = jnp.split(modulation.astype(jnp.float32), 2, axis=-1)
        x = modulate(layer_norm(x), shift, scale)
        out = self.patch_size**2 * self.out_channels
        return nn.Dense(out, kernel_init=zeros, dtype=self.dtype, name="linear")(x)


class SiT(nn.Module):
    """SiT (or DiT) denoiser returning its prediction and the hidden state used for alignment.

    Attributes:
      input_size: side of the (square) input, e.g. 32 for 32x32x4 SD-VAE latents.
      in_channels: input channels (4 for latents, 3 for pixels); the output has as many, or
        twice as many with `learn_sigma`.
      patch_size, hidden_size, depth, num_heads, mlp_ratio: the transformer's shape.
      num_classes: real classes; the label table has one more row, the null class
        `num_classes`, which the caller substitutes for dropped labels (classifier-free guidance).
      encoder_depth: 1-based index of the block whose output is returned as the hidden state.
      dtype: compute dtype of matmuls; parameters are float32, norms and residuals float32.
      remat: recompute each block's activations in the backward pass (jax.checkpoint) instead
        of storing them: less memory for about one more forward pass.
      learn_sigma: DiT's head: the output has 2C channels, the noise prediction then the
        variance interpolation values (see `sara_jax.objective.diffusion.p_mean_variance`).
      gather: FSDP (`training.sharding`): maps a block's params, as this device holds them, to
        the whole ones, just before the block runs. The block is then rematerialised with
        `fsdp_saveable`, so the backward pass gathers them again instead of holding every
        block's from the forward.
    """

    input_size: int
    in_channels: int
    patch_size: int
    hidden_size: int
    depth: int
    num_heads: int
    num_classes: int
    encoder_depth: int
    mlp_ratio: float = 4.0
    dtype: jnp.dtype = jnp.float32
    remat: bool = False
    learn_sigma: bool = False
    gather: Callable[[dict], dict] | None = None

    @nn.compact
    def __call__(self, x: jax.Array, t: jax.Array, y: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Predicts the velocity (SiT) or the noise and variance (DiT) at (x, t) for labels y.

        Args:
          x: (B, H, W, C) noisy input x_t.
          t: (B,) times, fed to the sinusoidal embedding as they are: t in [0, 1] for the SiT,
            the diffusion step 0..999 for the DiT (as each paper's code does).
          y: (B,) int labels in [0, num_classes]; num_classes is the null (unconditional) label.
        Returns:
          output: (B, H, W, C) float32 velocity, or (B, H, W, 2C) [eps, variance values] with
            `learn_sigma`.
          hidden: (B, N, hidden_size) float32 output of block `encoder_depth`, N = (H/p)*(W/p).
        """
        batch, height, width, channels = x.shape
        p = self.patch_size
        if height != self.input_size or width != self.input_size or channels != self.in_channels:
            raise ValueError(
                f"SiT expects inputs of shape (B, {self.input_size}, {self.input_size}, "
                f"{self.in_channels}), got {x.shape}"
            )
        if not 1 <= self.encoder_depth <= self.depth:
            raise ValueError(
                f"encoder_depth must be in [1, depth={self.depth}], got {self.encoder_depth}"
            )
        grid = self.input_size // p
        # Patch embedding as a strided conv whose kernel is xavier-initialised like the
        # flattened (p*p*C -> D) linear map, as DiT does.
        patch_init = nn.initializers.variance_scaling(
            1.0, "fan_avg", "uniform", in_axis=(0, 1, 2), out_axis=3
        )
        h = nn.Conv(
            self.hidden_size,
            (p, p),
            strides=(p, p),
            padding="VALID",
            kernel_init=patch_init,
            dtype=self.dtype,
            name="x_embedder",
        )(x)
        h = h.reshape(batch, grid * grid, self.hidden_size).astype(jnp.float32)
        h = h + sincos_pos_embed_2d(self.hidden_size, grid)[None]

        t_emb = TimestepEmbedder(self.hidden_size, dtype=self.dtype, name="t_embedder")(t)
        y_emb = nn.Embed(
            self.num_classes + 1, self.hidden_size, embedding_init=normal_002, name="y_embedder"
        )(y)
        c = t_emb.astype(jnp.float32) + y_emb

        block = SiTBlock
        if self.gather is not None:
            gather = self.gather
            block = nn.map_variables(
                block, "params", trans_in_fn=lambda v: {"params": gather(v["params"])}
            )
        if self.remat:  # Everything recomputed, gathers included.
            block = nn.remat(block)
        elif self.gather is not None:
            block = nn.remat(block, policy=fsdp_saveable)
        hidden = None
        for i in range(self.depth):
            h = block(
                self.hidden_size, self.num_heads, self.mlp_ratio, self.dtype, name=f"blocks_{i}"
            )(h, c)
            if i + 1 == self.encoder_depth:
                hidden = h
        out_channels = 2 * channels if self.learn_sigma else channels
        out = FinalLayer(self.hidden_size, p, out_channels, self.dtype, name="final_layer")(h, c)
        # Token n holds a (p, p, C_out) patch of the output; put the patches back on the grid.
        out = out.astype(jnp.float32).reshape(batch, grid, grid, p, p, out_channels)
        output = out.transpose(0, 1, 3, 2, 4, 5).reshape(batch, height, width, out_channels)
        return output, hidden
