"""DiT-L/2 on ImageNet-256 (paper Table 1a): DiT's DDPM objective, alignment depth 8, 400K steps.

`--config=configs/dit_l.py` is SARA; `:repa` aligns patches only, `:none` trains a plain DiT;
`:irepa` and `:sara_irepa` take iREPA's conv projector and z-scored targets (`config.METHODS`).
Samples as the DiT paper evaluates: DDPM on 250 respaced steps, no guidance.
"""

from sara_jax.config import METHODS, known_method, paper_config

VARIANTS = tuple(METHODS)


def get_config(arg: str = "sara"):
    config = paper_config("L", 8, 400_000, known_method(arg))
    config.model.family = "dit"  # eps + learned variance, L_simple + L_vlb (config.diffusion).
    config.sample.method = "ddpm"  # On sample.num_steps = 250 respaced steps.
    return config
