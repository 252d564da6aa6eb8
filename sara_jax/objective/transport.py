"""The linear interpolant of SiT/REPA: x_t = (1 - t) x0 + t eps, velocity target eps - x0.

t = 0 is data and t = 1 is noise; samplers integrate from t = 1 down to t = 0.
"""

import jax
import jax.numpy as jnp


def sample_time(key: jax.Array, shape: tuple[int, ...] = ()) -> jax.Array:
    """t ~ U(0, 1), float32, of the given shape (no weighting, as SARA/REPA)."""
    return jax.random.uniform(key, shape, dtype=jnp.float32)


def interpolate(x0: jax.Array, eps: jax.Array, t: jax.Array) -> jax.Array:
    """x_t = (1 - t) x0 + t eps.

    Args:
      x0: (B, ...) clean data; eps: (B, ...) Gaussian noise; t: (B,) times.
    Returns: (B, ...) x_t.
    """
    t = t.reshape(t.shape + (1,) * (x0.ndim - t.ndim))
    return (1 - t) * x0 + t * eps


def velocity_target(x0: jax.Array, eps: jax.Array) -> jax.Array:
    """v = d x_t / d t = eps - x0 (Eq. 2 for the linear interpolant), L_velocity's target."""
    return eps - x0
