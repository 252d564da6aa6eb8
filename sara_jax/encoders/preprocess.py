"""Image preprocessing in front of the frozen encoder, as REPA's `preprocess_raw_image`."""

import jax
import jax.numpy as jnp

from sara_jax.encoders.registry import IMAGENET_MEAN, IMAGENET_STD, EncoderSpec
from sara_jax.models.resize import resize_bicubic


def normalize(
    x: jax.Array,
    mean: tuple[float, float, float] = IMAGENET_MEAN,
    std: tuple[float, float, float] = IMAGENET_STD,
) -> jax.Array:
    """(x - mean) / std per channel; x: (..., 3) float in [0, 1]."""
    return (x - jnp.asarray(mean, x.dtype)) / jnp.asarray(std, x.dtype)


def imagenet_normalize(images: jax.Array) -> jax.Array:
    """uint8 images (B, H, W, 3) -> float32 (x / 255 - mean) / std with ImageNet statistics."""
    return normalize(images.astype(jnp.float32) / 255.0)


def encoder_inputs(images: jax.Array, spec: EncoderSpec, image_size: int) -> jax.Array:
    """uint8 images (B, H, W, 3) -> float32 (B, image_size, image_size, 3) encoder inputs.

    x / 255, then normalisation and torch's bicubic resize (a = -0.75, no antialias) in the
    order REPA applies them for this family.
    """
    x = images.astype(jnp.float32) / 255.0
    size = (image_size, image_size)
    if spec.resize_first:
        return normalize(resize_bicubic(x, size), spec.mean, spec.std)
    return resize_bicubic(normalize(x, spec.mean, spec.std), size)
