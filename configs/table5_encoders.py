"""Paper Table 5: SiT-L/2, 400K steps, REPA or SARA with several target encoders and alignment
depths.

`--config=configs/table5_encoders.py:dinov2_vitl14,sara,8`: encoder (a name in
`sara_jax.encoder_registry.ENCODERS`, loaded from its published Hugging Face checkpoint),
method (`repa` or `sara`), alignment depth. The MAE-L and MoCov3-L rows are not ported.
"""

from sara_jax.config import METHODS, paper_config
from sara_jax.encoder_registry import ENCODERS

VARIANTS = tuple(
    f"{encoder},{method},8"
    for encoder in ("dinov2_vitb14", "dinov2_vitl14", "dinov2_vitg14", "clip_vitl14")
    for method in ("repa", "sara")
) + tuple(f"dinov2_vitb14,sara,{depth}" for depth in (6, 10, 12, 14, 16))


def get_config(arg: str = "dinov2_vitb14,sara,8"):
    encoder, method, depth = arg.split(",")
    config = paper_config("L", int(depth), 400_000, METHODS[method])
    config.encoder.name = encoder
    config.encoder.checkpoint = ENCODERS[encoder].hub_id
    return config
