"""The denoising objective of each model family, and the diffusion inputs of one example.

"sit": the linear interpolant (Eq. 2) and L_velocity (Eq. 3). "dit": DDPM's q(x_t | x_0) and
DiT's L_simple + L_vlb (`diffusion`). The alignment terms (`sara`) act the same on both.
"""

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import ml_collections

from sara_jax.objective import diffusion, losses, transport

Batch = dict[str, jax.Array]


def clean_input(example: Batch, key: jax.Array, data: ml_collections.ConfigDict) -> jax.Array:
    """x0 of one example: the image in [-1, 1] (pixel space) or a scaled VAE posterior sample.

    Args:
      example: "image" uint8 (H, W, 3), or "latent_mean"/"latent_std" float (h, w, 4).
      key: PRNG key of the latent sample (unused in pixel space).
    """
    if data.space == "pixel":
        return example["image"].astype(jnp.float32) / 127.5 - 1.0
    mean = example["latent_mean"].astype(jnp.float32)
    std = example["latent_std"].astype(jnp.float32)
    return (mean + std * jax.random.normal(key, mean.shape)) * data.latent_scale


class Objective(NamedTuple):
    """A model family's denoising objective.

    sample_time: key -> one example's t: float in [0, 1] (SiT) or int step in [0, T) (DiT).
    network_inputs: (x0 (B, H, W, C), eps (B, H, W, C), t (B,)) -> "x_t" and "t" for the
      network, and what `loss` needs besides its output.
    loss: (network output, inputs) -> (the denoising loss, {name: term} to log).
    """

    sample_time: Callable[[jax.Array], jax.Array]
    network_inputs: Callable[[jax.Array, jax.Array, jax.Array], Batch]
    loss: Callable[[jax.Array, Batch], tuple[jax.Array, dict[str, jax.Array]]]


def make_objective(config: ml_collections.ConfigDict) -> Objective:
    """SiT's velocity regression or DiT's DDPM objective, as `config.model.family` says.

    "sit": x_t = (1 - t) x0 + t eps with t ~ U(0, 1), L_velocity on eps - x0 (logged
    "velocity"). "dit": t ~ U{0, .., T-1}, x_t from q(x_t | x_0), L_simple + L_vlb on the
    2C-channel output (logged "mse" and "vlb"); the DiT is fed the integer step as its time.
    """
    if config.model.family == "sit":

        def velocity_inputs(x0: jax.Array, eps: jax.Array, t: jax.Array) -> Batch:
            target = transport.velocity_target(x0, eps)
            return {"x_t": transport.interpolate(x0, eps, t), "t": t, "target": target}

        def velocity_objective(output: jax.Array, inputs: Batch) -> tuple[jax.Array, Batch]:
            terms = {"velocity": losses.velocity_loss(output, inputs["target"])}
            return terms["velocity"], terms

        return Objective(transport.sample_time, velocity_inputs, velocity_objective)

    d = config.diffusion
    schedule = diffusion.linear_schedule(d.num_timesteps, d.beta_start, d.beta_end)

    def sample_step(key: jax.Array) -> jax.Array:
        return jax.random.randint(key, (), 0, d.num_timesteps)

    def ddpm_inputs(x0: jax.Array, eps: jax.Array, t: jax.Array) -> Batch:
        return {"x_t": diffusion.q_sample(schedule, x0, t, eps), "t": t, "x0": x0, "eps": eps}

    def ddpm_objective(output: jax.Array, inputs: Batch) -> tuple[jax.Array, Batch]:
        return diffusion.hybrid_loss(
            schedule, output, inputs["x0"], inputs["x_t"], inputs["t"], inputs["eps"]
        )

    return Objective(sample_step, ddpm_inputs, ddpm_objective)


def example_inputs(
    key: jax.Array, example: Batch, config: ml_collections.ConfigDict
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """The diffusion inputs of one example: (x0, t, eps, label with CFG dropout applied)."""
    k_t, k_eps, k_latent, k_drop = jax.random.split(key, 4)
    x0 = clean_input(example, k_latent, config.data)
    t = make_objective(config).sample_time(k_t)
    eps = jax.random.normal(k_eps, x0.shape)
    dropped = jax.random.uniform(k_drop) < config.model.class_dropout
    label = jnp.where(dropped, config.model.num_classes, example["label"])
    return x0, t, eps, label
