"""SiT-XL/2 on ImageNet-256 (paper Table 4; Table 1b): alignment depth 8.

`--config=configs/sit_xl.py` is SARA; `:repa` aligns patches only, `:none` trains a plain SiT.
"""

from sara_jax.config import base_config, set_alignment, sit_preset

VARIANTS = ("sara", "repa", "none")


def get_config(arg: str = "sara"):
    config = base_config()
    sit_preset(config, "XL")
    config.model.encoder_depth = 8
    config.train.num_steps = 2_000_000
    config.sample.cfg_scale = 1.35  # Table 1b's guidance scale (no guidance interval).
    set_alignment(config, {"sara": "patch,struc,adv", "repa": "patch", "none": "none"}[arg])
    return config
