"""Paper Table 2: SiT-XL/2, 400K steps, with a subset of the alignment terms.

`--config=configs/table2_alignment.py:patch,struc` (REPA is `patch`; a plain SiT is `none`). A
method of `sara_jax.config.METHODS` names a row too: `:irepa` is REPA with iREPA's conv
projector and z-scored targets (L_patch at 1.0), `:sara_irepa` SARA's three terms with them.
"""

from sara_jax.config import paper_config

# The rows of Table 2, the no-alignment SiT baseline, then iREPA's changes alone and with SARA.
VARIANTS = (
    "patch",
    "patch,struc",
    "patch,adv",
    "struc,adv",
    "patch,struc,adv",
    "none",
    "irepa",
    "sara_irepa",
)


def get_config(arg: str = "patch,struc,adv"):
    return paper_config("XL", 8, 400_000, arg)
