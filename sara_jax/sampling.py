"""Samplers of the probability-flow ODE dx/dt = v(x, t), integrated from t = 1 (noise) to 0."""

from collections.abc import Callable

import jax
import jax.numpy as jnp

VelocityFn = Callable[[jax.Array, jax.Array, jax.Array], jax.Array]


def guided_velocity(velocity_fn: VelocityFn, null_label: int, cfg_scale: float) -> VelocityFn:
    """Classifier-free guidance: v_uncond + w (v_cond - v_uncond); w = 1 is no guidance.

    Args:
      velocity_fn: (x (B, H, W, C), t (B,), y (B,)) -> v (B, H, W, C).
      null_label: the label of the unconditional model.
    """
    if cfg_scale == 1.0:
        return velocity_fn

    def guided(x: jax.Array, t: jax.Array, y: jax.Array) -> jax.Array:
        v = velocity_fn(
            jnp.concatenate([x, x]),
            jnp.concatenate([t, t]),
            jnp.concatenate([y, jnp.full_like(y, null_label)]),
        )
        v_cond, v_uncond = jnp.split(v, 2)
        return v_uncond + cfg_scale * (v_cond - v_uncond)

    return guided


def euler_ode(velocity_fn: VelocityFn, noise: jax.Array, labels: jax.Array, num_steps: int):
    """Plain Euler steps on t = linspace(1, 0, num_steps + 1).

    Args:
      noise: (B, H, W, C) x at t = 1; labels: (B,).
    Returns: (B, H, W, C) x at t = 0.
    """
    times = jnp.linspace(1.0, 0.0, num_steps + 1)

    def step(x: jax.Array, i: jax.Array) -> tuple[jax.Array, None]:
        t, t_next = times[i], times[i + 1]
        v = velocity_fn(x, jnp.full((x.shape[0],), t), labels)
        return x + (t_next - t) * v, None

    x, _ = jax.lax.scan(step, noise, jnp.arange(num_steps))
    return x
