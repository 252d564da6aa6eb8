"""SiT-XL/2 + SARA on ImageNet-256 (paper Table 4, Table 1b row): 2M steps, alignment depth 8."""

from sara_jax.config import base_config, sit_preset


def get_config():
    config = base_config()
    sit_preset(config, "XL")
    config.model.encoder_depth = 8
    config.train.num_steps = 2_000_000
    return config
