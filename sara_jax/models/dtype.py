"""The config's dtype names ("float32", "bfloat16") as jnp dtypes."""

import jax.numpy as jnp


def dtype_of(name: str) -> jnp.dtype:
    """'float32' | 'bfloat16' -> the jnp dtype."""
    return {"float32": jnp.float32, "bfloat16": jnp.bfloat16}[name]
