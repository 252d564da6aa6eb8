"""SiT-B/2 + SARA on ImageNet-256 (paper Table 4, Table 1a row): 400K steps, alignment depth 4."""

from sara_jax.config import base_config, sit_preset


def get_config():
    config = base_config()
    sit_preset(config, "B")
    config.model.encoder_depth = 4
    config.train.num_steps = 400_000
    return config
