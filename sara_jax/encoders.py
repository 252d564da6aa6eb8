"""The frozen alignment encoder: which network, its weights, and its preprocessing.

The encoder's params live outside the TrainState: they never change, so they are neither
checkpointed nor donated, and reach the train step as a replicated argument.
"""

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import jax
import ml_collections

from sara_jax.encoder_preprocess import imagenet_normalize
from sara_jax.encoder_pretrain import demo_vit, pretrained_demo_vit
from sara_jax.train_state import dtype_of

PyTree = Any


@dataclasses.dataclass(frozen=True)
class Encoder:
    """A frozen encoder.

    features: (params, images uint8 (B, H, W, 3)) -> z_enc float32 (B, N, z_dim).
    """

    features: Callable[[PyTree, jax.Array], jax.Array]
    params: PyTree
    z_dim: int
    num_tokens: int


def load_encoder(config: ml_collections.ConfigDict, source: Sequence[dict]) -> Encoder:
    """Builds the encoder `config.encoder` names, with its weights.

    Args:
      source: the training records, from which the demo encoder is pretrained (and cached).
    """
    if config.encoder.kind != "demo_vit":
        raise ValueError(
            f"config.encoder.kind={config.encoder.kind!r}: loading published checkpoints "
            f"({config.encoder.checkpoint!r}) is not implemented yet; use 'demo_vit'"
        )
    module = demo_vit(config.encoder, dtype_of(config.encoder.compute_dtype))
    params = pretrained_demo_vit(config, source)

    def features(params: PyTree, images: jax.Array) -> jax.Array:
        out = module.apply({"params": params}, imagenet_normalize(images))
        return out["x_norm_patchtokens"]

    return Encoder(
        features=features,
        params=params,
        z_dim=config.encoder.arch.embed_dim,
        num_tokens=module.pos_grid**2,
    )
