"""DINOv2 checkpoints -> `DinoV2` params, from either published naming.

- torch hub (`dinov2_vitb14_pretrain.pth`, what REPA loads): `blocks.3.attn.qkv.weight`, ...;
  the Flax module carries these names, so the mapping is a rename.
- Hugging Face (`facebook/dinov2-base`, `facebook/dinov2-with-registers-base`, as stored on
  disk): `encoder.layer.3.attention.attention.query.weight`, ...; q, k and v are fused back
  into DINOv2's qkv.

Both tables cover 37 x 37 patches (518 px); the position table is resampled once here to the
module's `pos_grid`, as REPA does with timm's `resample_abs_pos_embed`.
"""

from typing import Any

import numpy as np
from flax import traverse_util

from sara_jax.converters.checkpoint import StateDict
from sara_jax.converters.mapping import Converter, conv
from sara_jax.models.resize import resample_pos_embed

PyTree = Any

# Known, unused: the masked-image-modelling token, and a classifier head on top of the model.
IGNORED = (r"(embeddings\.)?mask_token", r"classifier\..*", r"head\..*")
# Hugging Face ViTs keep q, k and v as separate Linear layers; timm and DINOv2 fuse them.
QKV = ("query", "key", "value")


def _pos_embed(table: np.ndarray, expected: PyTree) -> np.ndarray:
    grid = int(np.sqrt(expected["pos_embed"].shape[1] - 1))
    return resample_pos_embed(table, grid)


def _num_blocks(expected: PyTree) -> int:
    return sum(name.startswith("blocks_") for name in expected)


def _torch_leaf(flax_leaf: str) -> str:
    return {"kernel": "weight", "scale": "weight"}.get(flax_leaf, flax_leaf)


def from_torch_hub(state_dict: StateDict, source: str, expected: PyTree) -> PyTree:
    """Converts a facebookresearch/dinov2 (torch hub) state dict, or any timm-named ViT (MAE,
    MoCo v3: the same names without layer scale).

    Args:
      expected: the target `DinoV2` param tree (arrays or ShapeDtypeStructs): its pos_grid,
        depth, registers and FFN decide what is read.
    """
    c = Converter(state_dict, source, IGNORED)
    c.put("pos_embed", _pos_embed(c.take("pos_embed"), expected), "pos_embed")
    c.put("patch_embed/kernel", conv(c.take("patch_embed.proj.weight")), "patch_embed.proj.weight")
    c.put("patch_embed/bias", c.take("patch_embed.proj.bias"), "patch_embed.proj.bias")
    for path in traverse_util.flatten_dict(expected, sep="/"):
        if path.startswith(("pos_embed", "patch_embed/")):
            continue
        *modules, leaf = path.split("/")
        # blocks_3/attn/qkv/kernel -> blocks.3.attn.qkv.weight
        key = ".".join([*modules, _torch_leaf(leaf)]).replace("blocks_", "blocks.")
        c.move(path, key)
    return c.finish(expected)


def from_hf(state_dict: StateDict, source: str, expected: PyTree) -> PyTree:
    """Converts a Hugging Face Dinov2Model / Dinov2WithRegistersModel checkpoint (on-disk
    naming; a `dinov2.` prefix, as in Dinov2ForImageClassification, is accepted)."""
    if any(k.startswith("dinov2.") for k in state_dict):
        state_dict = {k.removeprefix("dinov2."): v for k, v in state_dict.items()}
    c = Converter(state_dict, source, IGNORED)
    emb = "embeddings"
    c.put("cls_token", c.take(f"{emb}.cls_token"), f"{emb}.cls_token")
    table = c.take(f"{emb}.position_embeddings")
    c.put("pos_embed", _pos_embed(table, expected), f"{emb}.position_embeddings")
    if "register_tokens" in expected:
        c.put("register_tokens", c.take(f"{emb}.register_tokens"), f"{emb}.register_tokens")
    proj = f"{emb}.patch_embeddings.projection"
    c.put("patch_embed/kernel", conv(c.take(f"{proj}.weight")), f"{proj}.weight")
    c.put("patch_embed/bias", c.take(f"{proj}.bias"), f"{proj}.bias")
    swiglu = "w12" in expected["blocks_0"]["mlp"]
    for i in range(_num_blocks(expected)):
        hf, ours = f"encoder.layer.{i}", f"blocks_{i}"
        c.fuse(f"{ours}/attn/qkv", [f"{hf}.attention.attention.{n}" for n in QKV])
        pairs = [
            ("norm1", "norm1"),
            ("attn/proj", "attention.output.dense"),
            ("norm2", "norm2"),
            ("mlp/w12", "mlp.weights_in") if swiglu else ("mlp/fc1", "mlp.fc1"),
            ("mlp/w3", "mlp.weights_out") if swiglu else ("mlp/fc2", "mlp.fc2"),
        ]
        for path, key in pairs:
            for leaf in ("scale", "bias") if "norm" in path else ("kernel", "bias"):
                c.move(f"{ours}/{path}/{leaf}", f"{hf}.{key}.{_torch_leaf(leaf)}")
        for n in (1, 2):
            key = f"{hf}.layer_scale{n}.lambda1"
            c.put(f"{ours}/ls{n}/gamma", c.take(key), key)
    for leaf in ("scale", "bias"):
        c.move(f"norm/{leaf}", f"layernorm.{_torch_leaf(leaf)}")
    return c.finish(expected)


def convert(state_dict: StateDict, source: str, expected: PyTree) -> PyTree:
    """from_torch_hub or from_hf, whichever naming `state_dict` uses."""
    if "blocks.0.norm1.weight" in state_dict:
        return from_torch_hub(state_dict, source, expected)
    if any(k.endswith("embeddings.cls_token") for k in state_dict):
        return from_hf(state_dict, source, expected)
    if "blocks.0.0.norm1.weight" in state_dict:
        raise ValueError(
            f"{source}: a chunked-blocks DINOv2 state dict (blocks.0.0.*); re-save it with "
            "block_chunks=0 (the torch hub models' layout)"
        )
    raise ValueError(
        f"{source}: not a DINOv2 checkpoint: expected torch hub keys ('blocks.0.norm1.weight') "
        "or Hugging Face keys ('embeddings.cls_token')"
    )
