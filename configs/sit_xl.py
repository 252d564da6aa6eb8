"""SiT-XL/2 on ImageNet-256 (paper Table 4; Table 1b): alignment depth 8.

`--config=configs/sit_xl.py` is SARA; `:repa` aligns patches only, `:none` trains a plain SiT.
"""

from sara_jax.config import METHODS, paper_config

VARIANTS = tuple(METHODS)


def get_config(arg: str = "sara"):
    config = paper_config("XL", 8, 2_000_000, METHODS[arg])
    # Targets from the published DINOv2-B/14, D's trunk from torchvision's ImageNet ResNet-18;
    # a local path or a `python -m sara_jax.convert` directory works as well.
    config.encoder.name, config.encoder.checkpoint = "dinov2_vitb14", "facebook/dinov2-base"
    config.disc.checkpoint = "timm/resnet18.tv_in1k"
    config.sample.cfg_scale = 1.35  # Table 1b's guidance scale (no guidance interval).
    return config
