"""From what the SiT generates to images: latents through the SD-VAE decoder."""

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import ml_collections

from sara_jax.converters.vae import load_vae
from sara_jax.models.dtype import dtype_of

PyTree = Any


class Decoder(NamedTuple):
    """decode: (params, latents (B, h, w, C)) -> images (B, H, W, 3) in about [-1, 1]."""

    params: PyTree
    decode: Callable[[PyTree, jax.Array], jax.Array]


def latent_decoder(config: ml_collections.ConfigDict) -> Decoder | None:
    """`config.vae.decode_checkpoint`'s decoder for a latent-space config (the latents divided
    by `data.latent_scale` first, as they were scaled for training); None in pixel space."""
    if config.data.space != "latent":
        return None
    vae, params = load_vae(
        config.vae.decode_checkpoint,
        "config.vae.decode_checkpoint",
        dtype_of(config.vae.compute_dtype),
    )

    def decode(params: PyTree, z: jax.Array) -> jax.Array:
        return vae.apply({"params": params}, z / config.data.latent_scale, method=vae.decode)

    return Decoder(params, decode)
