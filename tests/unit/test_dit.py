"""The DiT rows of Table 1a: the DiT network's size and its DDPM sampling (its training step
with SARA and its sample job: e2e/test_dit_e2e.py)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import dit_xl
from sara_jax.config import sit_preset
from sara_jax.objective import diffusion
from sara_jax.sampling import ddpm
from sara_jax.training.state import build_models


def param_count(config) -> tuple[int, dict]:
    """Parameters of the config's DiT, from shapes alone (no memory is allocated)."""
    m = config.model
    sit = build_models(config, 768).sit
    x = jax.ShapeDtypeStruct((1, m.input_size, m.input_size, m.in_channels), jnp.float32)
    t = jax.ShapeDtypeStruct((1,), jnp.float32)
    y = jax.ShapeDtypeStruct((1,), jnp.int32)
    shapes = jax.eval_shape(sit.init, jax.random.key(0), x, t, y)["params"]
    return sum(math.prod(s.shape) for s in jax.tree.leaves(shapes)), shapes


# The DiT paper's Table 1 (the learned-sigma head adds p*p*C*(D+1), under 0.01%).
@pytest.mark.parametrize("size,expected", [("B", 130e6), ("L", 458e6), ("XL", 675e6)])
def test_published_dit_parameter_counts(size, expected):
    config = dit_xl.get_config()
    sit_preset(config, size)  # configs/dit_l.py and dit_xl.py hold L and XL (test_config.py)
    count, shapes = param_count(config)
    assert abs(count - expected) / expected < 0.005, count
    # 2 x 2 patches of 2 x 4 channels: eps and the variance values.
    assert shapes["final_layer"]["linear"]["kernel"].shape == (config.model.hidden_size, 32)


# Gaussian data x0 ~ N(MU, S^2) per dimension: q(x_{t-1} | x_t) is Gaussian, so a network
# with the exact E[eps | x_t] and the exact reverse variance makes DDPM sample the data exactly.
MU, S = 1.5, 0.5


def exact_gaussian_model(full: diffusion.Schedule, spaced: diffusion.Schedule):
    """(x, t, y) -> [E[eps | x_t], v] with v giving the exact reverse variance at step t."""
    abar = full.alphas_cumprod[spaced.timesteps]
    var_x0 = S**2 * (1 - abar) / (abar * S**2 + 1 - abar)  # Var[x0 | x_t]
    reverse_var = spaced.posterior_variance + spaced.posterior_mean_coef1**2 * var_x0
    low, high = spaced.posterior_log_variance_clipped, np.log(spaced.betas)
    v = 2 * (np.log(reverse_var) - low) / (high - low) - 1
    v[0] = 0.0  # The last step adds no noise; its variance is never used.
    v_at, abar_at = np.zeros(len(full.betas)), np.ones(len(full.betas))
    v_at[spaced.timesteps], abar_at[spaced.timesteps] = v, abar

    def model_fn(x, t, y):
        k = t.astype(jnp.int32)
        a = jnp.asarray(abar_at, jnp.float32)[k][:, None, None, None]
        eps = jnp.sqrt(1 - a) * (x - jnp.sqrt(a) * MU) / (a * S**2 + 1 - a)
        v_t = jnp.asarray(v_at, jnp.float32)[k][:, None, None, None]
        return jnp.concatenate([eps, jnp.broadcast_to(v_t, x.shape)], axis=-1)

    return model_fn


def test_ddpm_with_the_exact_eps_recovers_the_data_mean_and_std():
    full = diffusion.linear_schedule(1000, 1e-4, 0.02)
    spaced = diffusion.respace(full, 250)
    noise = jax.random.normal(jax.random.key(1), (4096, 2, 2, 2))
    model_fn = exact_gaussian_model(full, spaced)
    draw = jax.jit(lambda z, key: ddpm.ddpm_sample(spaced, model_fn, z, None, key))
    x0 = draw(noise, jax.random.key(2))
    # 16384 values: the standard errors of mean and std are ~0.004 and ~0.003.
    assert abs(float(x0.mean()) - MU) < 0.015
    assert abs(float(x0.std()) - S) < 0.012


NULL = 10


def labelled_model(x, t, y):
    """An 8-channel output (eps and v of C = 4) that is k * 3 for a class, k * 1 for the null."""
    scale = jnp.where(y == NULL, 1.0, 3.0)[:, None, None, None]
    return jnp.zeros(x.shape[:-1] + (8,)) + scale * jnp.arange(1.0, 9.0)


def test_dit_guidance_acts_on_the_first_eps_channels_only():
    x, t, y = jnp.zeros((2, 2, 2, 4)), jnp.full(2, 500.0), jnp.array([0, 7])
    k = np.arange(1.0, 9.0)
    guided = ddpm.guided_model(labelled_model, NULL, 2.0, 3)(x, t, y)
    # w = 2: uncond + 2 (cond - uncond) = 5 k on channels 0-2; the conditional 3 k elsewhere.
    np.testing.assert_allclose(guided[0, 0, 0], np.concatenate([5 * k[:3], 3 * k[3:]]))
    all_eps = ddpm.guided_model(labelled_model, NULL, 2.0, 4)(x, t, y)
    np.testing.assert_allclose(all_eps[1, 1, 1], np.concatenate([5 * k[:4], 3 * k[4:]]))
    assert ddpm.guided_model(labelled_model, NULL, 1.0, 3) is labelled_model
