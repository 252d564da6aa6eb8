"""Paper Table 2: SiT-XL/2, 400K steps, with a subset of the alignment terms.

`--config=configs/table2_alignment.py:patch,struc` (REPA is `patch`; a plain SiT is `none`).
"""

from sara_jax.config import paper_config

# The rows of Table 2, then the no-alignment SiT baseline.
VARIANTS = ("patch", "patch,struc", "patch,adv", "struc,adv", "patch,struc,adv", "none")


def get_config(arg: str = "patch,struc,adv"):
    return paper_config("XL", 8, 400_000, arg)
