"""The model's sampler as one function of (params, noise, labels, key): what the preview grids,
the in-training FID and `python -m sara_jax.sample` all draw with."""

from collections.abc import Callable
from typing import Any

import jax
import ml_collections

from sara_jax.models.sit import SiT
from sara_jax.objective import diffusion
from sara_jax.sampling import ddpm, samplers

PyTree = Any
Denoiser = Callable[[PyTree, jax.Array, jax.Array, jax.Array], jax.Array]


def make_denoiser(
    config: ml_collections.ConfigDict, sit: SiT, num_steps: int | None = None
) -> Denoiser:
    """`(sit_params, noise (B, H, W, C), labels (B,), key) -> x0 (B, H, W, C)`.

    Uses `config.sample`'s method, guidance scale and interval; `num_steps` overrides
    `sample.num_steps` (the in-training FID samples with fewer steps). `key` drives the
    sampler's own noise (the SDE's and DDPM's; the ODEs use none). For a DiT
    (`model.family` "dit") the method is DDPM on `num_steps` respaced steps of `config.diffusion`
    with DiT's guidance (`sample.ddpm_cfg_channels`); `noise` is x at the last step.
    """
    s = config.sample
    steps = s.num_steps if num_steps is None else num_steps

    def network(params: PyTree) -> Callable[[jax.Array, jax.Array, jax.Array], jax.Array]:
        return lambda x, t, y: sit.apply({"params": params}, x, t, y)[0]

    if config.model.family == "dit":
        d = config.diffusion
        schedule = diffusion.respace(
            diffusion.linear_schedule(d.num_timesteps, d.beta_start, d.beta_end), steps
        )

        def denoise_ddpm(
            params: PyTree, noise: jax.Array, labels: jax.Array, key: jax.Array
        ) -> jax.Array:
            guided = ddpm.guided_model(
                network(params), config.model.num_classes, s.cfg_scale, s.ddpm_cfg_channels
            )
            return ddpm.ddpm_sample(schedule, guided, noise, labels, key)

        return denoise_ddpm

    guidance = samplers.Guidance(
        config.model.num_classes, s.cfg_scale, (s.guidance_low, s.guidance_high)
    )

    def denoise(params: PyTree, noise: jax.Array, labels: jax.Array, key: jax.Array) -> jax.Array:
        return samplers.sample(s.method, network(params), noise, labels, steps, key, guidance)

    return denoise
