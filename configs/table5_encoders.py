"""Paper Table 5: SiT-L/2, 400K steps, REPA or SARA with several target encoders and alignment
depths.

`--config=configs/table5_encoders.py:dinov2_vitl14,sara,8`: encoder (a name in
`sara_jax.encoders.registry.ENCODERS`), method (a key of `sara_jax.config.METHODS`: `repa`,
`sara`, `irepa`, ...), alignment depth. DINOv2 and CLIP load from their published Hugging Face
checkpoints. MAE-L and MoCov3-L weights are not on
the hub: download the file the registry's `download` names and point `encoder.checkpoint` at it
(the default is where REPA's README puts it, relative to the working directory), e.g.
`--config.encoder.checkpoint=/data/ckpts/mocov3_vitl.pth`. Both take the 256-px images as they
are (16 x 16 patches of 16 px), as REPA does.
"""

from sara_jax.config import known_method, paper_config
from sara_jax.encoders.registry import ENCODERS

# REPA's local files (utils.load_encoders) for the encoders that are not on the hub; the "./"
# keeps a relative path from reading as a hub id "org/name".
REPA_FILES = {"mae_vitl16": "./ckpts/mae_vitl.pth", "mocov3_vitl16": "./ckpts/mocov3_vitl.pth"}

VARIANTS = tuple(
    f"{encoder},{method},8"
    for encoder in (
        "dinov2_vitb14",
        "dinov2_vitl14",
        "dinov2_vitg14",
        "clip_vitl14",
        "mae_vitl16",
        "mocov3_vitl16",
    )
    for method in ("repa", "sara")
) + tuple(f"dinov2_vitb14,sara,{depth}" for depth in (6, 10, 12, 14, 16))


def get_config(arg: str = "dinov2_vitb14,sara,8"):
    encoder, method, depth = (*arg.split(","), "", "")[:3]
    if encoder not in ENCODERS or not depth.isdigit():
        raise ValueError(
            f"{arg!r}: expected ENCODER,METHOD,DEPTH (e.g. {VARIANTS[0]}), ENCODER one of "
            f"{', '.join(ENCODERS)}"
        )
    config = paper_config("L", int(depth), 400_000, known_method(method))
    config.encoder.name = encoder
    config.encoder.checkpoint = ENCODERS[encoder].hub_id or REPA_FILES[encoder]
    if ENCODERS[encoder].patch_size == 16:
        # REPA's preprocess_raw_image resizes only the patch-14 encoders' inputs (to 224 px).
        config.encoder.image_size = config.data.image_size
    return config
