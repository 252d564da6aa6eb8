"""MoCo v3 ViT checkpoints -> `DinoV2(layer_scale=False)` params.

A MoCo v3 training checkpoint (`{"state_dict": ...}`, unwrapped by `checkpoint.read_state_dict`)
holds the DistributedDataParallel-wrapped model: `module.base_encoder.*` (a timm
VisionTransformer, whose `head` is MoCo's projection MLP), `module.momentum_encoder.*` and
`module.predictor.*`. As REPA's `fix_mocov3_state_dict` does, only the base encoder without its
head is kept; timm's naming is DINOv2's torch-hub naming, so `dinov2.from_torch_hub` maps it.
Plain timm naming, without `module.base_encoder.`, is accepted as well.

MoCo v3 uses a fixed 2D sin-cos position table, stored in the checkpoint (14 x 14 at 224 px);
it is taken from there and resampled once to the module's `pos_grid` with timm's recipe, as
REPA does (16 x 16 for its 256-px inputs), not rebuilt as sin-cos for the new grid.
"""

from typing import Any

from sara_jax.converters import dinov2
from sara_jax.converters.checkpoint import StateDict

PyTree = Any

PREFIX = "module.base_encoder."
# REPA and RCG (which publishes the ViT-L checkpoint) rename these back: a naming bug in the
# checkpoint, by their comments.
MISNAMED = {
    "blocks.13.norm13.": "blocks.13.norm1.",
    "blocks.13.mlp.fc13.": "blocks.13.mlp.fc1.",
    "blocks.14.norm14.": "blocks.14.norm2.",
    "blocks.14.mlp.fc14.": "blocks.14.mlp.fc2.",
}


def _fix_name(key: str) -> str:
    for wrong, right in MISNAMED.items():
        if key.startswith(wrong):
            return right + key.removeprefix(wrong)
    return key


def convert(state_dict: StateDict, source: str, expected: PyTree) -> PyTree:
    """Converts a MoCo v3 ViT checkpoint.

    Args:
      state_dict: the checkpoint's `state_dict`, with or without the `module.base_encoder.`
        prefix.
      source: where it came from, for error messages.
      expected: the target `DinoV2(layer_scale=False)` param tree (arrays or
        ShapeDtypeStructs); its pos_grid and depth decide what is read.
    Returns: the nested param dict, float32 numpy arrays.
    """
    prefixed = any(k.startswith(PREFIX) for k in state_dict)
    prefix = PREFIX if prefixed else ""
    encoder = {
        _fix_name(k.removeprefix(prefix)): v
        for k, v in state_dict.items()
        if k.startswith(prefix) and not k.startswith(f"{prefix}head.")
    }
    # Errors name the keys without the prefix; the source says where they live.
    where = f"{source} (keys under {PREFIX!r})" if prefixed else source
    return dinov2.from_torch_hub(encoder, where, expected)
