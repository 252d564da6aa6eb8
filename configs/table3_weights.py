"""Paper Table 3: SiT-XL/2, 400K steps, lambda = 0.5, a grid over beta and gamma.

`--config=configs/table3_weights.py:0.1,0.05` sets beta = 0.1, gamma = 0.05.
"""

from sara_jax.config import paper_config

VARIANTS = ("0.1,0.01", "0.1,0.05", "0.5,0.01", "0.5,0.05")


def get_config(arg: str = "0.5,0.05"):
    config = paper_config("XL", 8, 400_000, "sara")
    config.loss.struc_weight, config.loss.adv_weight = (float(v) for v in arg.split(","))
    return config
