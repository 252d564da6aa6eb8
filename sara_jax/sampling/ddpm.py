"""DiT's sampler: ancestral DDPM on a respaced schedule, with DiT's classifier-free guidance.

The schedule and the network's output parameterisation are `sara_jax.objective.diffusion`'s.
"""

import jax
import jax.numpy as jnp

from sara_jax.io.errors import InputError
from sara_jax.objective.diffusion import ModelFn, Schedule, p_mean_variance
from sara_jax.sampling.samplers import conditional_and_unconditional

SAMPLERS = ("ddpm",)


def check_method(method: str, field: str = "sample.method") -> None:
    """Raises an InputError naming the config `field` unless `method` is one of SAMPLERS."""
    if method not in SAMPLERS:
        expected = f"one of {SAMPLERS} for model.family='dit'"
        raise InputError(f"config.{field} must be {expected}, got {method!r}")


def guided_model(model_fn: ModelFn, null_label: int, cfg_scale: float, channels: int) -> ModelFn:
    """Classifier-free guidance as DiT's forward_with_cfg applies it.

    eps_uncond + w (eps_cond - eps_uncond) on the first `channels` output channels; the other
    eps channels and the variance values are the conditional prediction's. DiT's published
    samples guide 3 of the 4 latent channels; channels = C guides all of eps.

    Args:
      model_fn: (x (B, H, W, C), t (B,), y (B,)) -> (B, H, W, 2C).
      cfg_scale: w; 1 is no guidance and returns model_fn itself (no extra evaluation).
    """
    if cfg_scale == 1.0:
        return model_fn

    def guided(x: jax.Array, t: jax.Array, y: jax.Array) -> jax.Array:
        cond, uncond = conditional_and_unconditional(model_fn, x, t, y, null_label)
        mixed = uncond[..., :channels] + cfg_scale * (cond[..., :channels] - uncond[..., :channels])
        return cond.at[..., :channels].set(mixed)

    return guided


def ddpm_sample(
    schedule: Schedule, model_fn: ModelFn, noise: jax.Array, labels: jax.Array, key: jax.Array
) -> jax.Array:
    """Ancestral sampling x_{t-1} = mean + sigma z from x_{S-1} = noise down to x_0.

    The network sees each step's original index (`schedule.timesteps`, as float); the step to
    t = 0 adds no noise.

    Args:
      model_fn: (x, t (B,) float, y) -> (B, H, W, 2C), e.g. a `guided_model`.
      noise: (B, H, W, C) x at the last step; labels: (B,); key: PRNG key of the step noise.
    Returns: (B, H, W, C) x_0.
    """
    batch = noise.shape[0]
    network_times = jnp.asarray(schedule.timesteps, jnp.float32)

    def step(x: jax.Array, i: jax.Array) -> tuple[jax.Array, None]:
        t = jnp.full((batch,), i)
        output = model_fn(x, jnp.full((batch,), network_times[i]), labels)
        mean, log_var = p_mean_variance(schedule, output, x, t)
        z = jax.random.normal(jax.random.fold_in(key, i), x.shape, x.dtype)
        return mean + jnp.where(i > 0, jnp.exp(0.5 * log_var) * z, 0.0), None

    x, _ = jax.lax.scan(step, noise, jnp.arange(len(schedule.betas) - 1, -1, -1))
    return x
