"""Stable Diffusion's KL autoencoder (diffusers `AutoencoderKL`), the image <-> latent map.

SARA trains on latents of ImageNet images encoded by `sd-vae-ft-mse` and decodes its samples
with `sd-vae-ft-ema` (../shared/SARA.md, "Data"); both are this architecture. Submodules carry
diffusers' names with "." -> "_" (`encoder.down_blocks.0.resnets.1.conv1` ->
`encoder/down_blocks_0/resnets_1/conv1`, `attentions.0.to_out.0` -> `attentions_0/to_out_0`),
so `sara_jax.converters.vae` maps the published checkpoints by renaming and transposing.

Images are channels-last (B, H, W, 3) in [-1, 1]; latents (B, H/f, W/f, latent_channels) with
f = 2^(len(block_out_channels) - 1) (8 for SD). Params are float32 and only ever come from a
converted checkpoint, so the initialisers are flax's defaults.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

# torch pads a 3x3 conv by one pixel on every side; the same as 'SAME' at stride 1, spelled out
# so it can never drift from torch's grid.
PAD_3X3 = ((1, 1), (1, 1))
# diffusers' Downsample2D (padding=0, as the VAE encoder builds it) pads right and bottom by one
# pixel, then convolves 3x3 with stride 2 and no padding: not torch's symmetric padding.
PAD_DOWN = ((0, 1), (0, 1))


def group_norm(groups: int, name: str) -> nn.GroupNorm:
    """diffusers' GroupNorm (eps 1e-6), in float32.

    `use_fast_variance=False`: E[x^2] - E[x]^2 loses digits on activations with a large mean,
    enough to break float32 parity with torch's two-pass variance.
    """
    return nn.GroupNorm(
        num_groups=groups, epsilon=1e-6, use_fast_variance=False, dtype=jnp.float32, name=name
    )


class ResnetBlock(nn.Module):
    """diffusers' ResnetBlock2D without a time embedding:
    x + conv2(silu(norm2(conv1(silu(norm1(x)))))), the skip through a 1x1 `conv_shortcut`
    when the channel count changes.

    Attributes:
      features: output channels.
      groups: GroupNorm groups.
      dtype: compute dtype of the convs.
    """

    features: int
    groups: int
    dtype: jnp.dtype

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """x: (B, H, W, C) float32 -> (B, H, W, features) float32."""
        h = nn.silu(group_norm(self.groups, "norm1")(x))
        h = nn.Conv(self.features, (3, 3), padding=PAD_3X3, dtype=self.dtype, name="conv1")(h)
        h = nn.silu(group_norm(self.groups, "norm2")(h.astype(jnp.float32)))
        h = nn.Conv(self.features, (3, 3), padding=PAD_3X3, dtype=self.dtype, name="conv2")(h)
        if x.shape[-1] != self.features:
            x = nn.Conv(self.features, (1, 1), dtype=self.dtype, name="conv_shortcut")(x)
        return x.astype(jnp.float32) + h.astype(jnp.float32)


class Attention(nn.Module):
    """The mid-block's single-head spatial self-attention (diffusers' Attention built with
    `_from_deprecated_attn_block`): x + to_out(softmax(q k^T / sqrt(C)) v), q, k, v from the
    group-normalised x.

    Attributes:
      groups: GroupNorm groups.
      dtype: compute dtype of the projections; logits and softmax are float32.
    """

    groups: int
    dtype: jnp.dtype

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """x: (B, H, W, C) float32 -> (B, H, W, C) float32."""
        batch, height, width, channels = x.shape
        h = group_norm(self.groups, "group_norm")(x).reshape(batch, height * width, 1, channels)
        q, k, v = (
            nn.Dense(channels, dtype=self.dtype, name=name)(h) for name in ("to_q", "to_k", "to_v")
        )
        # jax's reference implementation computes the logits and softmax in float32 even for
        # bf16 q, k, as diffusers does (upcast_softmax=True).
        h = jax.nn.dot_product_attention(q, k, v).reshape(batch, height, width, channels)
        h = nn.Dense(channels, dtype=self.dtype, name="to_out_0")(h)
        return x + h.astype(jnp.float32)


class MidBlock(nn.Module):
    """diffusers' UNetMidBlock2D as the VAE builds it: resnet, attention, resnet (one layer),
    all at the input's channel count."""

    groups: int
    dtype: jnp.dtype

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """x: (B, H, W, C) float32 -> (B, H, W, C) float32."""
        channels = x.shape[-1]
        x = ResnetBlock(channels, self.groups, self.dtype, name="resnets_0")(x)
        x = Attention(self.groups, self.dtype, name="attentions_0")(x)
        return ResnetBlock(channels, self.groups, self.dtype, name="resnets_1")(x)


class Downsample(nn.Module):
    """diffusers' Downsample2D (use_conv, padding=0): (0, 1) pad, 3x3 conv, stride 2."""

    dtype: jnp.dtype

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """x: (B, H, W, C) float32 -> (B, H/2, W/2, C) float32 (H, W even)."""
        conv = nn.Conv(x.shape[-1], (3, 3), (2, 2), PAD_DOWN, dtype=self.dtype, name="conv")
        return conv(x).astype(jnp.float32)


class Upsample(nn.Module):
    """diffusers' Upsample2D (use_conv): nearest-neighbour 2x, then a 3x3 conv."""

    dtype: jnp.dtype

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """x: (B, H, W, C) float32 -> (B, 2H, 2W, C) float32."""
        x = jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
        conv = nn.Conv(x.shape[-1], (3, 3), padding=PAD_3X3, dtype=self.dtype, name="conv")
        return conv(x).astype(jnp.float32)


class ResnetStage(nn.Module):
    """diffusers' DownEncoderBlock2D / UpDecoderBlock2D: `num_layers` resnets, then an
    optional 2x resample ("down" or "up")."""

    features: int
    num_layers: int
    resample: str | None
    groups: int
    dtype: jnp.dtype

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """x: (B, H, W, C) float32 -> (B, H', W', features) float32, H' = H/2, 2H or H."""
        for j in range(self.num_layers):
            x = ResnetBlock(self.features, self.groups, self.dtype, name=f"resnets_{j}")(x)
        if self.resample == "down":
            x = Downsample(self.dtype, name="downsamplers_0")(x)
        elif self.resample == "up":
            x = Upsample(self.dtype, name="upsamplers_0")(x)
        return x


class Encoder(nn.Module):
    """Image -> the posterior's (mean, logvar) moments, before `quant_conv`.

    conv_in -> down_blocks (layers_per_block resnets each, then a 2x downsample except after
    the last) -> mid_block -> GroupNorm, SiLU -> conv_out (2 * latent_channels).
    """

    block_out_channels: tuple[int, ...]
    layers_per_block: int
    latent_channels: int
    norm_num_groups: int
    dtype: jnp.dtype

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """x: (B, H, W, 3) -> (B, H/f, W/f, 2 * latent_channels) float32."""
        channels = self.block_out_channels
        groups, dtype = self.norm_num_groups, self.dtype
        x = nn.Conv(channels[0], (3, 3), padding=PAD_3X3, dtype=dtype, name="conv_in")(x)
        x = x.astype(jnp.float32)
        for i, features in enumerate(channels):
            last = i == len(channels) - 1
            resample = None if last else "down"
            name = f"down_blocks_{i}"
            x = ResnetStage(features, self.layers_per_block, resample, groups, dtype, name=name)(x)
        x = MidBlock(groups, dtype, name="mid_block")(x)
        x = nn.silu(group_norm(groups, "conv_norm_out")(x))
        conv_out = nn.Conv(
            2 * self.latent_channels, (3, 3), padding=PAD_3X3, dtype=dtype, name="conv_out"
        )
        return conv_out(x).astype(jnp.float32)


class Decoder(nn.Module):
    """Latent (after `post_quant_conv`) -> image.

    conv_in -> mid_block -> up_blocks in reversed channel order (layers_per_block + 1 resnets
    each, then a 2x upsample except after the last) -> GroupNorm, SiLU -> conv_out (3).
    """

    block_out_channels: tuple[int, ...]
    layers_per_block: int
    norm_num_groups: int
    dtype: jnp.dtype

    @nn.compact
    def __call__(self, z: jax.Array) -> jax.Array:
        """z: (B, h, w, latent_channels) -> (B, h*f, w*f, 3) float32."""
        channels = tuple(reversed(self.block_out_channels))
        groups, dtype = self.norm_num_groups, self.dtype
        x = nn.Conv(channels[0], (3, 3), padding=PAD_3X3, dtype=dtype, name="conv_in")(z)
        x = MidBlock(groups, dtype, name="mid_block")(x.astype(jnp.float32))
        for i, features in enumerate(channels):
            last = i == len(channels) - 1
            resample = None if last else "up"
            name = f"up_blocks_{i}"
            x = ResnetStage(
                features, self.layers_per_block + 1, resample, groups, dtype, name=name
            )(x)
        x = nn.silu(group_norm(groups, "conv_norm_out")(x))
        x = nn.Conv(3, (3, 3), padding=PAD_3X3, dtype=dtype, name="conv_out")(x)
        return x.astype(jnp.float32)


class AutoencoderKL(nn.Module):
    """diffusers' AutoencoderKL (3-channel images, SiLU, DownEncoderBlock2D / UpDecoderBlock2D,
    quant convs and mid-block attention on: every Stable Diffusion VAE).

    Attributes:
      block_out_channels: channels of each resolution level, finest first; len - 1 2x down- and
        upsamplings.
      layers_per_block: resnets per encoder level (the decoder has one more per level).
      latent_channels: channels of the latent.
      norm_num_groups: GroupNorm groups throughout.
      dtype: compute dtype of the convs and attention projections; params, GroupNorm, softmax,
        the residual stream and every output are float32.

    Use `module.apply({"params": params}, x, method="encode")` (or "decode").
    """

    block_out_channels: tuple[int, ...] = (128, 256, 512, 512)
    layers_per_block: int = 2
    latent_channels: int = 4
    norm_num_groups: int = 32
    dtype: jnp.dtype = jnp.float32

    @property
    def downsample_factor(self) -> int:
        return 2 ** (len(self.block_out_channels) - 1)

    def setup(self) -> None:
        self.encoder = Encoder(
            tuple(self.block_out_channels),
            self.layers_per_block,
            self.latent_channels,
            self.norm_num_groups,
            self.dtype,
        )
        self.decoder = Decoder(
            tuple(self.block_out_channels),
            self.layers_per_block,
            self.norm_num_groups,
            self.dtype,
        )
        self.quant_conv = nn.Conv(2 * self.latent_channels, (1, 1), dtype=self.dtype)
        self.post_quant_conv = nn.Conv(self.latent_channels, (1, 1), dtype=self.dtype)

    def encode(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """The diagonal Gaussian posterior of images x.

        Args:
          x: (B, H, W, 3) images in [-1, 1]; H and W multiples of the downsample factor f.
        Returns:
          mean, std: (B, H/f, W/f, latent_channels) float32, std = exp(logvar / 2) with logvar
            clipped to [-30, 20] (diffusers' DiagonalGaussianDistribution).
        """
        f = self.downsample_factor
        if x.shape[1] % f or x.shape[2] % f:
            raise ValueError(
                f"AutoencoderKL.encode: image size {x.shape[1]}x{x.shape[2]} is not a multiple "
                f"of the downsample factor {f}"
            )
        moments = self.quant_conv(self.encoder(x)).astype(jnp.float32)
        mean, logvar = jnp.split(moments, 2, axis=-1)
        return mean, jnp.exp(0.5 * jnp.clip(logvar, -30.0, 20.0))

    def decode(self, z: jax.Array) -> jax.Array:
        """Images of latents z.

        Args:
          z: (B, h, w, latent_channels) unscaled latents (divide a diffusion model's latent by
            the scaling factor 0.18215 first).
        Returns: (B, h*f, w*f, 3) float32, nominally in [-1, 1] (not clipped).
        """
        return self.decoder(self.post_quant_conv(z).astype(jnp.float32))

    def __call__(self, x: jax.Array) -> jax.Array:
        """decode(posterior mean of x): the deterministic reconstruction, (B, H, W, 3) float32.
        Touches every param, so `init` with it."""
        mean, _ = self.encode(x)
        return self.decode(mean)
