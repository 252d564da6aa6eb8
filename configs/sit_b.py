"""SiT-B/2 on ImageNet-256 (paper Table 4; Table 1a): alignment depth 4.

`--config=configs/sit_b.py` is SARA; `:repa` aligns patches only, `:none` trains a plain SiT.
"""

from sara_jax.config import base_config, set_alignment, sit_preset

VARIANTS = ("sara", "repa", "none")


def get_config(arg: str = "sara"):
    config = base_config()
    sit_preset(config, "B")
    config.model.encoder_depth = 4
    config.train.num_steps = 400_000
    set_alignment(config, {"sara": "patch,struc,adv", "repa": "patch", "none": "none"}[arg])
    return config
