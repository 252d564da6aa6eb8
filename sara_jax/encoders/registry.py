"""The frozen encoders a config can name (`config.encoder.name`), as data.

Each entry fixes the architecture, where its published weights live, and REPA's preprocessing
for it (`preprocess_raw_image`): x / 255, then the family's mean/std normalisation and a torch
bicubic resize to `config.encoder.image_size`, in the family's order. REPA feeds its patch-16
encoders (MAE, MoCo v3) the 256-px images as they are: their `image_size` is 256 and the resize
is the identity.
"""

import dataclasses

from sara_jax.io.errors import InputError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclasses.dataclass(frozen=True)
class EncoderSpec:
    """A frozen encoder.

    Attributes:
      family: "dinov2" (models.dinov2.DinoV2), "clip" (models.clip_vit), "mae" or "mocov3"
        (timm ViTs: a DinoV2 without layer scale) or "demo_vit" (a DinoV2 whose shape comes
        from config.encoder.arch, pretrained in-project).
      patch_size, embed_dim, depth, num_heads: the ViT's shape.
      num_register_tokens: DINOv2 register tokens (the `_reg` models).
      ffn: DINOv2 feed-forward, "mlp" or "swiglu" (ViT-g).
      layer_scale: DINOv2's per-channel residual gains; timm ViTs have none.
      hub_id: the published Hugging Face checkpoint; "" when REPA's weights are not on the hub.
      download: for those, where to download the file REPA loads.
      mean, std: per-channel input normalisation.
      resize_first: resize before normalising (REPA's CLIP order) rather than after (DINOv2).
    """

    family: str
    patch_size: int = 14
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    num_register_tokens: int = 0
    ffn: str = "mlp"
    layer_scale: bool = True
    hub_id: str = ""
    download: str = ""
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    resize_first: bool = False


_DINOV2_SIZES = {
    "s": ("small", 384, 12, 6, "mlp"),
    "b": ("base", 768, 12, 12, "mlp"),
    "l": ("large", 1024, 24, 16, "mlp"),
    "g": ("giant", 1536, 40, 24, "swiglu"),
}


def _dinov2(size: str, registers: bool) -> EncoderSpec:
    word, dim, depth, heads, ffn = _DINOV2_SIZES[size]
    return EncoderSpec(
        family="dinov2",
        embed_dim=dim,
        depth=depth,
        num_heads=heads,
        num_register_tokens=4 if registers else 0,
        ffn=ffn,
        hub_id=f"facebook/dinov2-with-registers-{word}" if registers else f"facebook/dinov2-{word}",
    )


ENCODERS: dict[str, EncoderSpec] = {
    **{f"dinov2_vit{s}14": _dinov2(s, False) for s in _DINOV2_SIZES},
    **{f"dinov2_vit{s}14_reg": _dinov2(s, True) for s in _DINOV2_SIZES},
    "clip_vitl14": EncoderSpec(
        family="clip",
        embed_dim=1024,
        depth=24,
        num_heads=16,
        hub_id="openai/clip-vit-large-patch14",
        mean=CLIP_MEAN,
        std=CLIP_STD,
        resize_first=True,
    ),
    # MAE's encoder-only release (norm_pix_loss targets), not the Hugging Face copy
    # facebook/vit-mae-large, which holds MAE's pixel-target "visualize" weights.
    "mae_vitl16": EncoderSpec(
        family="mae",
        patch_size=16,
        embed_dim=1024,
        depth=24,
        num_heads=16,
        layer_scale=False,
        download="https://dl.fbaipublicfiles.com/mae/pretrain/mae_pretrain_vit_large.pth",
    ),
    # The official MoCo v3 release stops at ViT-B; REPA's README points to RCG's ViT-L.
    "mocov3_vitl16": EncoderSpec(
        family="mocov3",
        patch_size=16,
        embed_dim=1024,
        depth=24,
        num_heads=16,
        layer_scale=False,
        download="https://drive.google.com/file/d/1Foa2-FqhwIFYjcAAbY9sXyO-1Vwwx-_9 "
        "(the MoCo v3 ViT-L of the LTH14/rcg README, vitl.pth.tar)",
    ),
    "demo_vit": EncoderSpec(family="demo_vit"),
}


def encoder_spec(name: str, field: str = "encoder.name") -> EncoderSpec:
    """The entry `name` of ENCODERS; an InputError naming the config `field` if there is none."""
    if name not in ENCODERS:
        raise InputError(f"config.{field} must be one of {sorted(ENCODERS)}, got {name!r}")
    return ENCODERS[name]


def encoder_width(encoder) -> int:
    """z_dim, the width of the tokens the encoder `config.encoder` names."""
    spec = encoder_spec(encoder.name)
    return encoder.arch.embed_dim if spec.family == "demo_vit" else spec.embed_dim
