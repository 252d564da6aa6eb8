"""Paper Table 2: SiT-XL/2, 400K steps, with a subset of the alignment terms.

`--config=configs/table2_alignment.py:patch,struc` (REPA is `patch`; a plain SiT is `none`).
"""

from sara_jax.config import base_config, set_alignment, sit_preset

# The rows of Table 2, then the no-alignment SiT baseline.
VARIANTS = ("patch", "patch,struc", "patch,adv", "struc,adv", "patch,struc,adv", "none")


def get_config(arg: str = "patch,struc,adv"):
    config = base_config()
    sit_preset(config, "XL")
    config.model.encoder_depth = 8
    config.train.num_steps = 400_000
    set_alignment(config, arg)
    return config
