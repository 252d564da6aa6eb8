"""Hugging Face CLIP checkpoints -> `ClipVisionTransformer` params.

Accepts a CLIPVisionModel checkpoint as transformers 5 writes it (`embeddings.patch_embedding.
weight`, ...) or one whose vision keys carry a `vision_model.` prefix: a full CLIPModel such as
`openai/clip-vit-large-patch14`, a CLIPVisionModelWithProjection, or a CLIPVisionModel saved by
transformers 4. The Flax module carries HF's names, so the
mapping is a rename plus transposes. What REPA never uses is ignored explicitly: the text
tower, both projections, `logit_scale`, `post_layernorm` (CLIP's ln_post, only for the pooled
embedding) and the `position_ids` buffers older checkpoints store; any other unread key is an
error. The position table is not resampled: CLIP's preprocessing resizes images to the
checkpoint's own resolution (224 px, a 16 x 16 grid for ViT-L/14).
"""

import re
from typing import Any

import numpy as np

from sara_jax.converters.checkpoint import StateDict
from sara_jax.converters.mapping import Converter, conv

PyTree = Any

PREFIX = "vision_model."


def ignored(prefix: str) -> tuple[str, ...]:
    """Known, unused keys of a CLIP checkpoint whose vision keys start with `prefix`."""
    vision = re.escape(prefix)
    return (
        r"text_model\..*",
        r"text_projection\.weight",
        r"visual_projection\.weight",
        r"logit_scale",
        rf"{vision}post_layernorm\.(weight|bias)",
        rf"{vision}embeddings\.position_ids",
    )


def _num_layers(expected: PyTree) -> int:
    return sum(re.fullmatch(r"layers_\d+", name) is not None for name in expected)


def _check_grid(table: np.ndarray, expected: PyTree, source: str) -> None:
    """A clear error when the checkpoint's position table covers another patch grid."""
    want = expected["position_embedding"].shape[0]
    if table.ndim == 2 and table.shape[0] != want:
        have, grid = np.sqrt(table.shape[0] - 1), np.sqrt(want - 1)
        raise ValueError(
            f"checkpoint {source} has a position table for {table.shape[0] - 1} patches "
            f"({have:g} per side), but the model's pos_grid={grid:g} needs {want - 1}: set "
            "pos_grid to the checkpoint's image_size // patch_size"
        )


def from_hf(state_dict: StateDict, source: str, expected: PyTree) -> PyTree:
    """Converts a Hugging Face CLIP checkpoint's vision tower.

    Args:
      state_dict: on-disk HF naming, with or without the `vision_model.` prefix.
      source: where it came from, for error messages.
      expected: the target `ClipVisionTransformer` param tree (arrays or ShapeDtypeStructs,
        e.g. `jax.eval_shape(model.init, key, images)["params"]`); its depth decides which
        layers are read.
    Returns: the nested param dict, float32 numpy arrays.
    """
    # Keys are read with their prefix rather than renamed, so errors name them as the file
    # does, and a stray unprefixed vision key in a prefixed checkpoint is reported, not merged.
    pre = PREFIX if any(k.startswith(PREFIX) for k in state_dict) else ""
    c = Converter(state_dict, source, ignored(pre))

    emb = f"{pre}embeddings"
    c.put("class_embedding", c.take(f"{emb}.class_embedding"), f"{emb}.class_embedding")
    key = f"{emb}.position_embedding.weight"
    table = c.take(key)
    _check_grid(table, expected, source)
    c.put("position_embedding", table, key)
    key = f"{emb}.patch_embedding.weight"
    c.put("patch_embedding/kernel", conv(c.take(key)), key)
    c.move("pre_layernorm/scale", f"{pre}pre_layrnorm.weight")
    c.move("pre_layernorm/bias", f"{pre}pre_layrnorm.bias")

    for i in range(_num_layers(expected)):
        hf, ours = f"{pre}encoder.layers.{i}", f"layers_{i}"
        for norm in ("layer_norm1", "layer_norm2"):
            c.move(f"{ours}/{norm}/scale", f"{hf}.{norm}.weight")
            c.move(f"{ours}/{norm}/bias", f"{hf}.{norm}.bias")
        modules = [f"self_attn.{n}_proj" for n in ("q", "k", "v", "out")] + ["mlp.fc1", "mlp.fc2"]
        for module in modules:
            path = f"{ours}/{module.replace('.', '/')}"
            c.move(f"{path}/kernel", f"{hf}.{module}.weight")
            c.move(f"{path}/bias", f"{hf}.{module}.bias")
    return c.finish(expected)
