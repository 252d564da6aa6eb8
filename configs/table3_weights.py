"""Paper Table 3: SiT-XL/2, 400K steps, lambda = 0.5, a grid over beta and gamma.

`--config=configs/table3_weights.py:0.1,0.05` sets beta = 0.1, gamma = 0.05.
"""

from sara_jax.config import base_config, sit_preset

VARIANTS = ("0.1,0.01", "0.1,0.05", "0.5,0.01", "0.5,0.05")


def get_config(arg: str = "0.5,0.05"):
    beta, gamma = (float(v) for v in arg.split(","))
    config = base_config()
    sit_preset(config, "XL")
    config.model.encoder_depth = 8
    config.train.num_steps = 400_000
    config.loss.struc_weight = beta
    config.loss.adv_weight = gamma
    return config
