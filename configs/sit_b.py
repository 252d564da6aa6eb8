"""SiT-B/2 on ImageNet-256 (paper Table 4; Table 1a): alignment depth 4.

`--config=configs/sit_b.py` is SARA; `:repa` aligns patches only, `:none` trains a plain SiT.
"""

from sara_jax.config import METHODS, method_terms, paper_config

VARIANTS = tuple(METHODS)


def get_config(arg: str = "sara"):
    return paper_config("B", 4, 400_000, method_terms(arg))
