"""Paper Table 5: SiT-L/2, 400K steps, REPA or SARA with DINOv2 encoders of several sizes and
alignment depths.

`--config=configs/table5_encoders.py:dinov2-large,sara,8`: encoder (a Hugging Face DINOv2
checkpoint), method (`repa` or `sara`), alignment depth. The MAE-L, MoCov3-L and CLIP-L rows
need their encoders ported first.
"""

from sara_jax.config import METHODS, paper_config

VARIANTS = tuple(
    f"dinov2-{size},{method},8"
    for size in ("base", "large", "giant")
    for method in ("repa", "sara")
) + tuple(f"dinov2-base,sara,{depth}" for depth in (6, 10, 12, 14, 16))


def get_config(arg: str = "dinov2-base,sara,8"):
    encoder, method, depth = arg.split(",")
    config = paper_config("L", int(depth), 400_000, METHODS[method])
    config.encoder.checkpoint = f"facebook/{encoder}"
    return config
