"""SiT-B/2 on ImageNet-256 (paper Table 4; Table 1a): alignment depth 4.

`--config=configs/sit_b.py` is SARA; `:repa` aligns patches only, `:none` trains a plain SiT;
`:irepa` and `:sara_irepa` take iREPA's conv projector and z-scored targets (`config.METHODS`).
"""

from sara_jax.config import METHODS, known_method, paper_config

VARIANTS = tuple(METHODS)


def get_config(arg: str = "sara"):
    return paper_config("B", 4, 400_000, known_method(arg))
