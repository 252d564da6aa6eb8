"""MAE ViT checkpoints -> `DinoV2(layer_scale=False)` params, from either published naming.

- MAE's own (`mae_pretrain_vit_large.pth`, what REPA loads; its `{"model": ...}` wrapper is
  removed by `checkpoint.read_state_dict`): timm's ViT naming, `blocks.3.attn.qkv.weight`, which
  is DINOv2's torch-hub naming, so `dinov2.from_torch_hub` maps it. The full "visualize"
  checkpoints also hold the decoder (`decoder_*`, `mask_token`), which is ignored.
- Hugging Face (`facebook/vit-mae-large`, as stored on disk): ViTMAEModel keys
  (`encoder.layer.3.attention.attention.query.weight`, ...), or ViTMAEForPreTraining's, which
  put them under `vit.` beside an ignored `decoder.`; q, k and v are fused back into qkv.

MAE's position table is a fixed 2D sin-cos table for the 14 x 14 grid of 224 px; like any other
it is taken from the checkpoint and resampled once to the module's `pos_grid` with timm's
recipe, as REPA does for its 256-px inputs (16 x 16 patches).
"""

import math
from typing import Any

from sara_jax.converters import dinov2
from sara_jax.converters.checkpoint import StateDict
from sara_jax.converters.mapping import Converter, conv
from sara_jax.models.resize import resample_pos_embed

PyTree = Any

HF_PREFIX = "vit."
# (our path, HF module) inside one block; LayerNorms map weight -> scale.
HF_BLOCK = (
    ("norm1", "layernorm_before"),
    ("attn/proj", "attention.output.dense"),
    ("norm2", "layernorm_after"),
    ("mlp/fc1", "intermediate.dense"),
    ("mlp/fc2", "output.dense"),
)


def from_mae(state_dict: StateDict, source: str, expected: PyTree) -> PyTree:
    """Converts a facebookresearch/mae checkpoint (timm naming), encoder-only or full.

    Args:
      state_dict: the checkpoint's `model` dict.
      source: where it came from, for error messages.
      expected: the target `DinoV2(layer_scale=False)` param tree (arrays or
        ShapeDtypeStructs); its pos_grid and depth decide what is read.
    Returns: the nested param dict, float32 numpy arrays.
    """
    # MAE's decoder tensors all start with "decoder_"; dinov2's converter ignores mask_token.
    encoder = {k: v for k, v in state_dict.items() if not k.startswith("decoder_")}
    return dinov2.from_torch_hub(encoder, source, expected)


def from_hf(state_dict: StateDict, source: str, expected: PyTree) -> PyTree:
    """Converts a Hugging Face ViTMAEModel / ViTMAEForPreTraining checkpoint (on-disk naming).

    Args, Returns: as `from_mae`.
    """
    # Keys are read with their prefix rather than renamed, so errors name them as the file does.
    pre = HF_PREFIX if any(k.startswith(HF_PREFIX) for k in state_dict) else ""
    c = Converter(state_dict, source, ignore=[r"decoder\..*"] if pre else [])
    emb = f"{pre}embeddings"
    c.put("cls_token", c.take(f"{emb}.cls_token"), f"{emb}.cls_token")
    key = f"{emb}.position_embeddings"
    grid = math.isqrt(expected["pos_embed"].shape[1] - 1)
    c.put("pos_embed", resample_pos_embed(c.take(key), grid), key)
    proj = f"{emb}.patch_embeddings.projection"
    c.put("patch_embed/kernel", conv(c.take(f"{proj}.weight")), f"{proj}.weight")
    c.move("patch_embed/bias", f"{proj}.bias")
    num_blocks = sum(name.startswith("blocks_") for name in expected)
    for i in range(num_blocks):
        hf, ours = f"{pre}encoder.layer.{i}", f"blocks_{i}"
        c.fuse(f"{ours}/attn/qkv", [f"{hf}.attention.attention.{n}" for n in dinov2.QKV])
        for path, module in HF_BLOCK:
            weight = "scale" if path.startswith("norm") else "kernel"
            c.move(f"{ours}/{path}/{weight}", f"{hf}.{module}.weight")
            c.move(f"{ours}/{path}/bias", f"{hf}.{module}.bias")
    c.move("norm/scale", f"{pre}layernorm.weight")
    c.move("norm/bias", f"{pre}layernorm.bias")
    return c.finish(expected)


def convert(state_dict: StateDict, source: str, expected: PyTree) -> PyTree:
    """from_mae or from_hf, whichever naming `state_dict` uses."""
    if "blocks.0.norm1.weight" in state_dict:
        return from_mae(state_dict, source, expected)
    if any(k.endswith("embeddings.cls_token") for k in state_dict):
        return from_hf(state_dict, source, expected)
    raise ValueError(
        f"{source}: not an MAE checkpoint: expected MAE's (timm) keys ('blocks.0.norm1.weight') "
        "or Hugging Face ViTMAE keys ('embeddings.cls_token', 'vit.embeddings.cls_token')"
    )
