"""The clean input x0 the train step takes from a batch (the step itself, compiled whole:
e2e/test_train_step_e2e.py)."""

import jax
import jax.numpy as jnp
import numpy as np
from helpers import STEP

from sara_jax.objective.family import clean_input


def test_clean_input_pixel_and_latent(tiny_config):
    c = tiny_config(STEP)
    image = np.array([[[0, 255, 127]]], np.uint8)
    np.testing.assert_allclose(
        clean_input({"image": jnp.asarray(image)}, jax.random.key(0), c.data),
        [[[-1.0, 1.0, 127 / 127.5 - 1]]],
        atol=1e-7,
    )
    c.data.space = "latent"
    mean, std = jnp.full((2, 2, 4), 0.5), jnp.full((2, 2, 4), 2.0)
    key = jax.random.key(3)
    z = clean_input({"latent_mean": mean, "latent_std": std}, key, c.data)
    np.testing.assert_allclose(
        z, (0.5 + 2.0 * jax.random.normal(key, (2, 2, 4))) * 0.18215, rtol=1e-6
    )
