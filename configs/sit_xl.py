"""SiT-XL/2 on ImageNet-256 (paper Table 4; Table 1b): alignment depth 8.

`--config=configs/sit_xl.py` is SARA; `:repa` aligns patches only, `:none` trains a plain SiT;
`:irepa` and `:sara_irepa` take iREPA's conv projector and z-scored targets (`config.METHODS`).
"""

from sara_jax.config import METHODS, known_method, paper_config

VARIANTS = tuple(METHODS)


def get_config(arg: str = "sara"):
    config = paper_config("XL", 8, 2_000_000, known_method(arg))
    config.sample.cfg_scale = 1.35  # Table 1b's guidance scale (no guidance interval).
    return config
