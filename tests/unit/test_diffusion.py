"""sara_jax.objective.diffusion against computations that do not share its formulas: products of the
per-step alphas, Bayes' rule for the posterior, the Gaussian KL in its textbook form, the
exact normal CDF, and IDDPM/DiT's respacing rule written with numpy."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sara_jax.objective import diffusion
from sara_jax.sampling import ddpm

T = 1000
SCHEDULE = diffusion.linear_schedule(T, 1e-4, 0.02)
BETAS = np.linspace(1e-4, 0.02, T)


def abar(t: int) -> float:
    """alpha-bar_t as the product of the per-step alphas, one at a time."""
    return math.prod(1.0 - BETAS[s] for s in range(t + 1))


def posterior_by_bayes(x0, x_t, t):
    """q(x_{t-1} | x_t, x_0) from q(x_{t-1} | x_0) = N(sqrt(abar_{t-1}) x0, 1 - abar_{t-1}) and
    q(x_t | x_{t-1}) = N(sqrt(alpha_t) x_{t-1}, beta_t): precisions add, means are weighted."""
    prior_mean, prior_var = math.sqrt(abar(t - 1)) * x0, 1.0 - abar(t - 1)
    alpha = 1.0 - BETAS[t]
    var = 1.0 / (1.0 / prior_var + alpha / BETAS[t])
    return var * (prior_mean / prior_var + math.sqrt(alpha) * x_t / BETAS[t]), var


def np_kl(m1, lv1, m2, lv2):
    """KL(N(m1, s1^2) || N(m2, s2^2)) = log(s2/s1) + (s1^2 + (m1 - m2)^2) / (2 s2^2) - 1/2."""
    s1, s2 = np.exp(0.5 * lv1), np.exp(0.5 * lv2)
    return np.log(s2 / s1) + (s1**2 + (m1 - m2) ** 2) / (2 * s2**2) - 0.5


def np_exact_cdf(x):
    return 0.5 * (1.0 + np.vectorize(math.erf)(np.asarray(x, np.float64) / math.sqrt(2.0)))


def np_bin_log_prob(x, mean, log_scale, cdf):
    """log of the mass of x's bin [x - 1/255, x + 1/255], the end bins open to +-infinity."""
    std = np.exp(log_scale)
    upper = np.where(x > 0.999, 1.0, cdf((x + 1 / 255 - mean) / std))
    lower = np.where(x < -0.999, 0.0, cdf((x - 1 / 255 - mean) / std))
    return np.log(np.maximum(upper - lower, 1e-12))


def np_tanh_cdf(x):
    return 0.5 * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * x**3)))


def test_tables_are_products_of_the_per_step_alphas():
    np.testing.assert_array_equal(SCHEDULE.betas, BETAS)
    np.testing.assert_array_equal(SCHEDULE.timesteps, np.arange(T))
    for t in (0, 1, 10, 500, 999):
        np.testing.assert_allclose(SCHEDULE.alphas_cumprod[t], abar(t), rtol=1e-12)
    for t in (1, 2, 250, 999):
        _, var = posterior_by_bayes(0.0, 0.0, t)
        np.testing.assert_allclose(SCHEDULE.posterior_variance[t], var, rtol=1e-10)
    # At t = 0 the posterior is a point; its log-variance is clipped to t = 1's.
    assert SCHEDULE.posterior_variance[0] == 0.0
    np.testing.assert_allclose(
        SCHEDULE.posterior_log_variance_clipped[:2], np.log(posterior_by_bayes(0, 0, 1)[1])
    )


def test_q_sample_has_the_marginal_of_the_chained_one_step_process():
    rng = np.random.default_rng(0)
    x0 = np.full((100_000,), 0.7)
    x = x0.copy()
    for t in range(200):  # x_t = sqrt(1 - beta_t) x_{t-1} + sqrt(beta_t) z
        x = np.sqrt(1 - BETAS[t]) * x + np.sqrt(BETAS[t]) * rng.normal(size=x.shape)
    eps = jax.random.normal(jax.random.key(0), (100_000,))
    closed = diffusion.q_sample(SCHEDULE, jnp.asarray(x0, jnp.float32), jnp.full(100_000, 199), eps)
    # Mean sqrt(abar) 0.7 ~ 0.23, std sqrt(1 - abar) ~ 0.95: standard errors ~ 0.003.
    assert abs(float(closed.mean()) - x.mean()) < 0.015
    assert abs(float(closed.std()) - x.std()) < 0.01
    np.testing.assert_allclose(closed.mean(), math.sqrt(abar(199)) * 0.7, atol=0.01)

    # And elementwise it is sqrt(abar_t) x0 + sqrt(1 - abar_t) eps at each example's own t.
    t = jnp.array([0, 37, 999])
    x0, eps = jnp.array([0.5, -1.0, 2.0]), jnp.array([1.0, 0.25, -0.5])
    expected = [math.sqrt(abar(s)) * a + math.sqrt(1 - abar(s)) * e for s, a, e in zip(
        [0, 37, 999], [0.5, -1.0, 2.0], [1.0, 0.25, -0.5], strict=True
    )]  # fmt: skip
    np.testing.assert_allclose(diffusion.q_sample(SCHEDULE, x0, t, eps), expected, rtol=1e-5)


def test_posterior_mean_and_variance_are_bayes_rule():
    t = jnp.array([1, 5, 300, 999])
    x0 = jnp.array([[0.3, -0.8], [1.0, 0.0], [-0.4, 0.9], [0.2, 0.2]])
    x_t = jnp.array([[0.1, 0.5], [-1.2, 0.7], [0.6, -2.0], [1.5, -0.3]])
    mean, log_var = diffusion.q_posterior(SCHEDULE, x0, x_t, t)
    for b, s in enumerate([1, 5, 300, 999]):
        for d in range(2):
            m, v = posterior_by_bayes(float(x0[b, d]), float(x_t[b, d]), s)
            np.testing.assert_allclose(mean[b, d], m, rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(log_var[b, 0], math.log(v), rtol=1e-5)


def test_learned_range_interpolates_log_variance_between_posterior_and_beta():
    t = jnp.array([3, 3, 3, 700])
    x0 = jax.random.normal(jax.random.key(1), (4, 2, 2, 3))
    eps = jax.random.normal(jax.random.key(2), (4, 2, 2, 3))
    x_t = diffusion.q_sample(SCHEDULE, x0, t, eps)
    v = jnp.array([-1.0, 0.0, 1.0, 0.5])[:, None, None, None] * jnp.ones_like(x0)
    mean, log_var = diffusion.p_mean_variance(SCHEDULE, jnp.concatenate([eps, v], axis=-1), x_t, t)
    small, large = np.log(posterior_by_bayes(0, 0, 3)[1]), np.log(BETAS[3])
    np.testing.assert_allclose(log_var[0], small, rtol=1e-5)
    np.testing.assert_allclose(log_var[1], 0.5 * (small + large), rtol=1e-5)
    np.testing.assert_allclose(log_var[2], large, rtol=1e-5)
    small, large = np.log(posterior_by_bayes(0, 0, 700)[1]), np.log(BETAS[700])
    np.testing.assert_allclose(log_var[3], 0.25 * small + 0.75 * large, rtol=1e-5)
    # With the true noise the predicted x_0 is x_0, so the mean is the true posterior mean.
    true_mean, _ = diffusion.q_posterior(SCHEDULE, x0, x_t, t)
    np.testing.assert_allclose(mean, true_mean, atol=2e-5)


def test_normal_kl_is_the_textbook_formula():
    rng = np.random.default_rng(3)
    m1, m2, lv1, lv2 = (rng.normal(size=50) for _ in range(4))
    np.testing.assert_allclose(
        diffusion.normal_kl(m1, lv1, m2, lv2), np_kl(m1, lv1, m2, lv2), rtol=1e-5, atol=1e-6
    )
    assert float(diffusion.normal_kl(0.3, -1.0, 0.3, -1.0)) == 0.0


def test_discretized_log_likelihood_is_a_distribution_over_the_256_bins():
    x = np.linspace(-1.0, 1.0, 256)  # the 8-bit values in [-1, 1]
    for mean, log_scale in [(0.1, -3.0), (-0.95, -2.0), (0.4, 0.5)]:
        log_p = diffusion.discretized_gaussian_log_likelihood(
            jnp.asarray(x, jnp.float32), mean, jnp.full(256, log_scale)
        )
        np.testing.assert_allclose(jnp.exp(log_p).sum(), 1.0, rtol=1e-4)
        # The published tanh CDF, exactly, where float32 resolves the mass (in the far tails
        # 1 + tanh cancels, as it does in the published float32 code) ...
        reference = np_bin_log_prob(x, mean, log_scale, np_tanh_cdf)
        resolved = reference > np.log(1e-4)
        np.testing.assert_allclose(log_p[resolved], reference[resolved], rtol=1e-3, atol=1e-5)
        # ... which is within 2e-4 of the exact normal CDF: the masses agree to that.
        exact = np.exp(np_bin_log_prob(x, mean, log_scale, np_exact_cdf))
        np.testing.assert_allclose(np.exp(log_p), exact, atol=4e-4)
    # Far outside the bin the probability is floored at 1e-12, not 0.
    far = diffusion.discretized_gaussian_log_likelihood(jnp.zeros(1), 0.9, jnp.full(1, -8.0))
    np.testing.assert_allclose(far, np.log(1e-12), rtol=1e-5)


def test_vlb_terms_are_kl_in_bits_and_the_decoder_nll_at_t0():
    key = jax.random.split(jax.random.key(4), 3)
    x0 = jnp.clip(jax.random.normal(key[0], (3, 4, 4, 2)), -1, 1)
    output = 0.5 * jax.random.normal(key[1], (3, 4, 4, 4))
    eps = jax.random.normal(key[2], x0.shape)
    t = jnp.array([0, 1, 640])
    x_t = diffusion.q_sample(SCHEDULE, x0, t, eps)
    bits = diffusion.vlb_terms(SCHEDULE, output, x0, x_t, t)
    assert bits.shape == (3,)

    x0, x_t, output = (np.asarray(a, np.float64) for a in (x0, x_t, output))
    eps_pred, v = output[..., :2], output[..., 2:]
    for b, s in enumerate([0, 1, 640]):
        a = abar(s)
        pred_x0 = (x_t[b] - math.sqrt(1 - a) * eps_pred[b]) / math.sqrt(a)
        small = posterior_by_bayes(0, 0, max(s, 1))[1]  # the clipped variance at t = 0
        log_var = (v[b] + 1) / 2 * np.log(BETAS[s]) + (1 - v[b]) / 2 * np.log(small)
        if s == 0:  # p(x_0 | x_1): the posterior mean at t = 0 is the predicted x_0 itself.
            nll = -np_bin_log_prob(x0[b], pred_x0, 0.5 * log_var, np_tanh_cdf)
            expected = nll.mean() / math.log(2)
        else:
            model_mean, _ = posterior_by_bayes(pred_x0, x_t[b], s)
            true_mean, true_var = posterior_by_bayes(x0[b], x_t[b], s)
            kl = np_kl(true_mean, np.log(true_var), model_mean, log_var)
            expected = kl.mean() / math.log(2)
        np.testing.assert_allclose(bits[b], expected, rtol=2e-3, atol=1e-6)


def test_hybrid_loss_adds_mse_and_vlb_and_the_vlb_trains_only_the_variance():
    key = jax.random.split(jax.random.key(5), 3)
    x0 = jax.random.normal(key[0], (4, 2, 2, 3))
    eps = jax.random.normal(key[1], x0.shape)
    t = jnp.array([0, 10, 400, 999])
    x_t = diffusion.q_sample(SCHEDULE, x0, t, eps)
    output = 0.3 * jax.random.normal(key[2], (4, 2, 2, 6))
    total, terms = diffusion.hybrid_loss(SCHEDULE, output, x0, x_t, t, eps)
    np.testing.assert_allclose(terms["mse"], np.mean((output[..., :3] - eps) ** 2), rtol=1e-6)
    np.testing.assert_allclose(
        terms["vlb"], diffusion.vlb_terms(SCHEDULE, output, x0, x_t, t).mean(), rtol=1e-6
    )
    np.testing.assert_allclose(total, terms["mse"] + terms["vlb"], rtol=1e-6)

    def term_grad(name):
        return jax.grad(lambda o: diffusion.hybrid_loss(SCHEDULE, o, x0, x_t, t, eps)[1][name])(
            output
        )

    g_vlb, g_mse = term_grad("vlb"), term_grad("mse")
    assert np.all(np.asarray(g_vlb[..., :3]) == 0) and np.abs(g_vlb[..., 3:]).sum() > 0
    assert np.all(np.asarray(g_mse[..., 3:]) == 0) and np.abs(g_mse[..., :3]).sum() > 0


def test_250_respaced_steps_follow_the_published_rule():
    kept = diffusion.space_timesteps(T, 250)
    # IDDPM's rule: round(i * (T - 1) / (n - 1)), halves to even (none occur here).
    np.testing.assert_array_equal(kept, np.round(np.arange(250) * 999 / 249).astype(int))
    # Hand-checked: stride 4.012..., so 164 = round(40.88 * 4.012) is followed by 169, not 168.
    assert list(kept[:5]) == [0, 4, 8, 12, 16] and list(kept[-3:]) == [991, 995, 999]
    assert (kept[41], kept[42]) == (164, 169)

    spaced = diffusion.respace(SCHEDULE, 250)
    np.testing.assert_array_equal(spaced.timesteps, kept)
    # Each new beta spans the original steps since the previous kept one.
    expected = [1.0 - abar(k) / (abar(p) if i else 1.0) for i, (p, k) in enumerate(
        zip(np.append(0, kept[:-1]), kept, strict=True)
    )]  # fmt: skip
    np.testing.assert_allclose(spaced.betas, expected, rtol=1e-10)
    # Hand-checked: beta'_1 = 1 - prod_{j=1..4} (1 - beta_j), the last spans 995 -> 999.
    np.testing.assert_allclose(spaced.betas[:2], [1e-4, 5.99065564e-4], rtol=1e-8)
    np.testing.assert_allclose(spaced.betas[-1], 0.07751934, rtol=1e-6)
    # The kept steps' marginals are unchanged.
    np.testing.assert_allclose(spaced.alphas_cumprod, SCHEDULE.alphas_cumprod[kept], rtol=1e-12)
    # All 1000 steps: the schedule itself.
    np.testing.assert_allclose(diffusion.respace(SCHEDULE, T).betas, BETAS, rtol=1e-9)


@pytest.mark.parametrize("num_steps", [1, 1001])
def test_respacing_names_an_impossible_step_count(num_steps):
    with pytest.raises(ValueError, match=r"DDPM sampling steps must be in \[2, diffusion"):
        diffusion.respace(SCHEDULE, num_steps)


def test_ddpm_walks_the_original_steps_down_and_adds_no_noise_at_the_last():
    spaced = diffusion.respace(SCHEDULE, 5)
    seen, inputs = [], []

    def model_fn(x, t, y):
        seen.append(np.asarray(t))
        inputs.append(x)
        return jnp.concatenate([0.1 * x, jnp.zeros_like(x)], axis=-1)

    noise = jax.random.normal(jax.random.key(6), (2, 2, 2, 1))
    with jax.disable_jit():
        x0 = ddpm.ddpm_sample(spaced, model_fn, noise, jnp.zeros(2, jnp.int32), jax.random.key(7))
    assert [list(t) for t in seen] == [[s, s] for s in [999, 749, 500, 250, 0]]
    assert all(t.dtype == np.float32 for t in seen)
    np.testing.assert_array_equal(inputs[0], noise)
    # The last step returns p's mean at step 0, with no noise.
    last = inputs[-1]
    mean, _ = diffusion.p_mean_variance(spaced, model_fn(last, None, None), last, jnp.zeros(2, int))
    np.testing.assert_allclose(x0, mean, rtol=1e-6)
