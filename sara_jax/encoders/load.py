"""The frozen alignment encoder: which network, its weights, and its preprocessing.

The encoder's params live outside the TrainState: they never change, so they are neither
checkpointed nor donated, and reach the train step as a replicated argument.
"""

import dataclasses
import operator
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from sara_jax.converters import clip as convert_clip
from sara_jax.converters import dinov2 as convert_dinov2
from sara_jax.converters import mae as convert_mae
from sara_jax.converters import mocov3 as convert_mocov3
from sara_jax.converters.checkpoint import load_state_dict
from sara_jax.converters.saved import is_converted, restore_converted
from sara_jax.encoders.preprocess import encoder_inputs
from sara_jax.encoders.pretrain import demo_vit, pretrained_demo_vit
from sara_jax.encoders.registry import ENCODERS, EncoderSpec
from sara_jax.models.clip_vit import ClipVisionTransformer
from sara_jax.models.dinov2 import DinoV2
from sara_jax.models.dtype import dtype_of

PyTree = Any

CONVERTERS = {
    "dinov2": convert_dinov2.convert,
    "clip": convert_clip.from_hf,
    "mae": convert_mae.convert,
    "mocov3": convert_mocov3.convert,
}


def _prenorm_patch_tokens(out: dict[str, jax.Array]) -> jax.Array:
    """The last block's patch tokens before the final LayerNorm, (B, N, D) (no registers)."""
    return out["x_prenorm"][:, 1:]


# What REPA aligns to, per family: module outputs -> patch tokens (B, N, D). For MAE, REPA's
# forward_features returns the last block's patch tokens without the final LayerNorm; MoCo v3
# goes through timm's forward_features, which applies it.
PATCH_TOKENS: dict[str, Callable[[dict[str, jax.Array]], jax.Array]] = {
    "dinov2": operator.itemgetter("x_norm_patchtokens"),
    "demo_vit": operator.itemgetter("x_norm_patchtokens"),
    "clip": operator.itemgetter("patch_tokens"),
    "mae": _prenorm_patch_tokens,
    "mocov3": operator.itemgetter("x_norm_patchtokens"),
}


@dataclasses.dataclass(frozen=True)
class Encoder:
    """A frozen encoder.

    features: (params, images uint8 (B, H, W, 3)) -> z_enc float32 (B, N, z_dim).
    """

    features: Callable[[PyTree, jax.Array], jax.Array]
    params: PyTree
    z_dim: int
    num_tokens: int


def encoder_module(encoder: ml_collections.ConfigDict) -> nn.Module:
    """The Flax module `config.encoder` names, for inputs of encoder.image_size pixels."""
    spec = ENCODERS[encoder.name]
    dtype = dtype_of(encoder.compute_dtype)
    if spec.family == "demo_vit":
        return demo_vit(encoder, dtype)
    grid = encoder.image_size // spec.patch_size
    if spec.family == "clip":
        return ClipVisionTransformer(
            spec.patch_size, spec.embed_dim, spec.depth, spec.num_heads, grid, dtype=dtype
        )
    return DinoV2(
        patch_size=spec.patch_size,
        embed_dim=spec.embed_dim,
        depth=spec.depth,
        num_heads=spec.num_heads,
        pos_grid=grid,
        num_register_tokens=spec.num_register_tokens,
        layer_scale=spec.layer_scale,
        ffn=spec.ffn,
        dtype=dtype,
    )


def expected_params(module: nn.Module, image_size: int) -> PyTree:
    """The module's param shapes (no compute, no memory)."""
    images = jax.ShapeDtypeStruct((1, image_size, image_size, 3), jnp.float32)
    return jax.eval_shape(module.init, jax.random.key(0), images)["params"]


def converted_info(encoder: ml_collections.ConfigDict) -> dict[str, Any]:
    """What identifies converted params: the encoder and its input size (the table's grid)."""
    return {"name": encoder.name, "image_size": encoder.image_size}


def convert_encoder(encoder: ml_collections.ConfigDict, field: str) -> PyTree:
    """Params for `encoder.name` from the published checkpoint `encoder.checkpoint`."""
    spec = ENCODERS[encoder.name]
    expected = expected_params(encoder_module(encoder), encoder.image_size)
    try:
        state_dict = load_state_dict(encoder.checkpoint, field)
    except FileNotFoundError as e:
        if not spec.download:
            raise
        raise type(e)(  # A MissingInput stays one.
            f"{e} {encoder.name}'s weights (as REPA uses them) are not on the Hugging Face "
            f"hub: download {spec.download} and set {field} to the file's path."
        ) from e
    return CONVERTERS[spec.family](state_dict, encoder.checkpoint, expected)


def features_fn(
    encoder: ml_collections.ConfigDict, module: nn.Module
) -> Callable[[PyTree, jax.Array], jax.Array]:
    """`(params, uint8 images (B, H, W, 3)) -> patch tokens (B, N, D)`: REPA's preprocessing
    for `encoder.name`, the module, and the tokens REPA aligns to."""
    spec = ENCODERS[encoder.name]
    tokens = PATCH_TOKENS[spec.family]

    def features(params: PyTree, images: jax.Array) -> jax.Array:
        out = module.apply({"params": params}, encoder_inputs(images, spec, encoder.image_size))
        return tokens(out)

    return features


def load_encoder(config: ml_collections.ConfigDict, source: Sequence[dict]) -> Encoder:
    """Builds the encoder `config.encoder` names, with its weights.

    `config.encoder.checkpoint` is a Hugging Face hub id, a local directory or weight file
    (converted on the fly), or a directory written by `python -m sara_jax.convert` (restored
    as is). The demo encoder is pretrained on `source`, the training records, and cached.
    """
    encoder = config.encoder
    spec: EncoderSpec = ENCODERS[encoder.name]
    module = encoder_module(encoder)
    field = "config.encoder.checkpoint"
    if spec.family == "demo_vit":
        params = pretrained_demo_vit(config, source)
    elif is_converted(encoder.checkpoint):
        expected = expected_params(module, encoder.image_size)
        params = restore_converted(encoder.checkpoint, expected, converted_info(encoder), field)
    else:
        params = convert_encoder(encoder, field)
    params = jax.tree.map(jnp.asarray, params)
    return Encoder(
        features=features_fn(encoder, module),
        params=params,
        z_dim=module.embed_dim,
        num_tokens=(encoder.image_size // module.patch_size) ** 2,
    )
