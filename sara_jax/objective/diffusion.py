"""The discrete Gaussian diffusion of DDPM as DiT trains and samples it (IDDPM's learned variance).

Forward process q(x_t | x_0) = N(sqrt(abar_t) x_0, (1 - abar_t) I) over t = 0 .. T-1 (T = 1000,
betas linear from 1e-4 to 0.02). The network predicts eps and, in C more channels, values v in
[-1, 1] whose (v + 1) / 2 interpolates the reverse log-variance between the clipped posterior
log-variance (v = -1) and log beta_t (v = 1). Training minimises L_simple + L_vlb: the eps MSE
plus the variational bound in bits per dimension, with the mean held fixed (stop-gradient) in
the bound so that only the variance learns from it. Sampling is ancestral on a respaced subset
of the steps (DiT: 250), with no noise added at the last step and no clipping of the predicted
x_0 (DiT samples with clip_denoised=False, and trains its bound the same way).

Tables are float64 numpy arrays computed once on the host; on the device they become float32
constants indexed by the (B,) integer step of each example. Arrays are channels-last:
x (B, H, W, C), network output (B, H, W, 2C).
"""

import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

# (x (B, H, W, C), t (B,) float network times, y (B,)) -> output (B, H, W, 2C).
ModelFn = Callable[[jax.Array, jax.Array, jax.Array], jax.Array]


# Half the width of one of the 256 bins of 8-bit data in [-1, 1], as the decoder term assumes.
_HALF_BIN = 1.0 / 255.0
_LOG_FLOOR = 1e-12  # Probabilities are clamped here before the log, as the published code does.


class Schedule(NamedTuple):
    """The tables of a discrete diffusion, each (S,) float64 over its S steps.

    timesteps: (S,) int, the index of each step in the original T-step process: what the
      network is fed (0 .. S-1 unless the schedule was respaced).
    """

    betas: np.ndarray
    alphas_cumprod: np.ndarray
    alphas_cumprod_prev: np.ndarray
    posterior_variance: np.ndarray
    posterior_log_variance_clipped: np.ndarray
    posterior_mean_coef1: np.ndarray
    posterior_mean_coef2: np.ndarray
    timesteps: np.ndarray


def make_schedule(betas: np.ndarray, timesteps: np.ndarray | None = None) -> Schedule:
    """The tables of the process with these (S,) betas; `timesteps` defaults to 0 .. S-1."""
    betas = np.asarray(betas, np.float64)
    if betas.ndim != 1 or len(betas) < 2 or not np.all((betas > 0) & (betas <= 1)):
        raise ValueError(f"betas must be a 1-D array of at least 2 values in (0, 1], got {betas}")
    alphas_cumprod = np.cumprod(1.0 - betas)
    alphas_cumprod_prev = np.append(1.0, alphas_cumprod[:-1])
    posterior_variance = betas * (1.0 - alphas_cumprod_prev) / (1.0 - alphas_cumprod)
    # The posterior variance is 0 at t = 0; its log is clipped to the value at t = 1 there.
    clipped = np.log(np.append(posterior_variance[1], posterior_variance[1:]))
    return Schedule(
        betas=betas,
        alphas_cumprod=alphas_cumprod,
        alphas_cumprod_prev=alphas_cumprod_prev,
        posterior_variance=posterior_variance,
        posterior_log_variance_clipped=clipped,
        posterior_mean_coef1=betas * np.sqrt(alphas_cumprod_prev) / (1.0 - alphas_cumprod),
        posterior_mean_coef2=(
            (1.0 - alphas_cumprod_prev) * np.sqrt(1.0 - betas) / (1.0 - alphas_cumprod)
        ),
        timesteps=np.arange(len(betas)) if timesteps is None else np.asarray(timesteps),
    )


def linear_schedule(num_timesteps: int, beta_start: float, beta_end: float) -> Schedule:
    """DDPM's schedule: betas evenly spaced from beta_start to beta_end over num_timesteps."""
    return make_schedule(np.linspace(beta_start, beta_end, num_timesteps, dtype=np.float64))


def space_timesteps(num_timesteps: int, num_steps: int) -> np.ndarray:
    """The num_steps of 0 .. num_timesteps-1 that IDDPM/DiT keep: evenly strided, rounded.

    Index i is round(i * stride) with stride (num_timesteps - 1) / (num_steps - 1), the stride
    accumulated by repeated addition and rounded half to even (Python's round), as the
    published rule does for one section.
    Returns: (num_steps,) int64, increasing, from 0 to num_timesteps - 1.
    """
    # One step would have no posterior variance to clip its log to (the published code fails
    # there too), so the learned-range variance needs two.
    if not 2 <= num_steps <= num_timesteps:
        raise ValueError(
            f"DDPM sampling steps must be in [2, diffusion.num_timesteps={num_timesteps}], "
            f"got {num_steps}"
        )
    stride = (num_timesteps - 1) / (num_steps - 1)
    kept, position = [], 0.0
    for _ in range(num_steps):
        kept.append(round(position))
        position += stride
    return np.array(kept, np.int64)


def respace(schedule: Schedule, num_steps: int) -> Schedule:
    """The process that visits only `space_timesteps` of `schedule`'s steps.

    Its betas are 1 - abar_k / abar_k' between consecutive kept steps k' < k (the first is
    1 - abar_k), so each kept step has the same marginal q(x_t | x_0) as in the full process;
    its `timesteps` map each new step to the original index the network is fed.
    """
    kept = space_timesteps(len(schedule.betas), num_steps)
    abar = schedule.alphas_cumprod[kept]
    betas = 1.0 - abar / np.append(1.0, abar[:-1])
    return make_schedule(betas, schedule.timesteps[kept])


def _at(table: np.ndarray, t: jax.Array, ndim: int) -> jax.Array:
    """table[t] as float32, shaped (B, 1, ..., 1) to broadcast over (B, ...) arrays of `ndim`.

    Args: table: (S,) float64; t: (B,) int steps.
    """
    values = jnp.asarray(table, jnp.float32)[t]
    return values.reshape(values.shape + (1,) * (ndim - values.ndim))


def q_sample(schedule: Schedule, x0: jax.Array, t: jax.Array, eps: jax.Array) -> jax.Array:
    """x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps, a draw of q(x_t | x_0).

    Args: x0, eps: (B, ...); t: (B,) int steps.
    Returns: (B, ...) x_t.
    """
    abar = schedule.alphas_cumprod
    return _at(np.sqrt(abar), t, x0.ndim) * x0 + _at(np.sqrt(1.0 - abar), t, x0.ndim) * eps


def q_posterior(
    schedule: Schedule, x0: jax.Array, x_t: jax.Array, t: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """Mean and clipped log-variance of q(x_{t-1} | x_t, x_0).

    Args: x0, x_t: (B, ...); t: (B,) int steps.
    Returns: mean (B, ...), log-variance (B, 1, ..., 1).
    """
    mean = (
        _at(schedule.posterior_mean_coef1, t, x0.ndim) * x0
        + _at(schedule.posterior_mean_coef2, t, x0.ndim) * x_t
    )
    return mean, _at(schedule.posterior_log_variance_clipped, t, x0.ndim)


def predict_x0(schedule: Schedule, x_t: jax.Array, t: jax.Array, eps: jax.Array) -> jax.Array:
    """x_0 = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t), unclipped. Shapes as `q_sample`."""
    abar = schedule.alphas_cumprod
    return (
        _at(np.sqrt(1.0 / abar), t, x_t.ndim) * x_t
        - _at(np.sqrt(1.0 / abar - 1.0), t, x_t.ndim) * eps
    )


def p_mean_variance(
    schedule: Schedule, output: jax.Array, x_t: jax.Array, t: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """Mean and log-variance of p(x_{t-1} | x_t) from the network's output (learned range).

    The mean is the posterior mean at the predicted x_0; the log-variance is
    frac log beta_t + (1 - frac) log posterior_variance_t (clipped), frac = (v + 1) / 2.

    Args:
      output: (B, H, W, 2C) float32: eps, then the variance values v.
      x_t: (B, H, W, C); t: (B,) int steps of `schedule`.
    Returns: mean (B, H, W, C), log-variance (B, H, W, C).
    """
    eps, v = jnp.split(output, 2, axis=-1)
    mean, min_log = q_posterior(schedule, predict_x0(schedule, x_t, t, eps), x_t, t)
    max_log = _at(np.log(schedule.betas), t, x_t.ndim)
    frac = (v + 1.0) / 2.0
    return mean, frac * max_log + (1.0 - frac) * min_log


def normal_kl(
    mean1: jax.Array, logvar1: jax.Array, mean2: jax.Array, logvar2: jax.Array
) -> jax.Array:
    """KL(N(mean1, e^logvar1) || N(mean2, e^logvar2)) elementwise, in nats (broadcasting)."""
    return 0.5 * (
        -1.0
        + logvar2
        - logvar1
        + jnp.exp(logvar1 - logvar2)
        + jnp.square(mean1 - mean2) * jnp.exp(-logvar2)
    )


def approx_standard_normal_cdf(x: jax.Array) -> jax.Array:
    """The tanh approximation of the standard normal CDF that the published bound uses."""
    return 0.5 * (1.0 + jnp.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def discretized_gaussian_log_likelihood(
    x: jax.Array, means: jax.Array, log_scales: jax.Array
) -> jax.Array:
    """log P(x) of N(means, e^(2 log_scales)) integrated over x's 8-bit bin, in nats.

    x is taken as 8-bit data scaled to [-1, 1]: the bin is x +- 1/255, and the end bins reach
    to -inf (x < -0.999) and +inf (x > 0.999). All arguments broadcast to x's shape.
    """
    centered = x - means
    inv_std = jnp.exp(-log_scales)
    cdf_plus = approx_standard_normal_cdf(inv_std * (centered + _HALF_BIN))
    cdf_min = approx_standard_normal_cdf(inv_std * (centered - _HALF_BIN))
    log_cdf_plus = jnp.log(jnp.maximum(cdf_plus, _LOG_FLOOR))
    log_one_minus_cdf_min = jnp.log(jnp.maximum(1.0 - cdf_min, _LOG_FLOOR))
    log_delta = jnp.log(jnp.maximum(cdf_plus - cdf_min, _LOG_FLOOR))
    return jnp.where(
        x < -0.999, log_cdf_plus, jnp.where(x > 0.999, log_one_minus_cdf_min, log_delta)
    )


def _mean_over_dims(x: jax.Array) -> jax.Array:
    """(B, ...) -> (B,) mean over all but the batch axis."""
    return jnp.mean(x, axis=tuple(range(1, x.ndim)))


def vlb_terms(
    schedule: Schedule, output: jax.Array, x0: jax.Array, x_t: jax.Array, t: jax.Array
) -> jax.Array:
    """The bound's term at step t, in bits per dimension.

    KL(q(x_{t-1} | x_t, x_0) || p(x_{t-1} | x_t)) for t > 0; the decoder's negative
    log-likelihood -log p(x_0 | x_1), discretized, at t = 0.

    Args: output: (B, H, W, 2C); x0, x_t: (B, H, W, C); t: (B,) int steps.
    Returns: (B,) float32.
    """
    true_mean, true_log_var = q_posterior(schedule, x0, x_t, t)
    mean, log_var = p_mean_variance(schedule, output, x_t, t)
    kl = _mean_over_dims(normal_kl(true_mean, true_log_var, mean, log_var)) / math.log(2.0)
    nll = -discretized_gaussian_log_likelihood(x0, mean, 0.5 * log_var)
    decoder_nll = _mean_over_dims(nll) / math.log(2.0)
    return jnp.where(t == 0, decoder_nll, kl)


def hybrid_loss(
    schedule: Schedule,
    output: jax.Array,
    x0: jax.Array,
    x_t: jax.Array,
    t: jax.Array,
    eps: jax.Array,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """IDDPM's L_hybrid as DiT trains with it: L_simple + L_vlb, batch means.

    L_simple ("mse") is the mean over all elements of (eps_pred - eps)^2. L_vlb ("vlb") is
    `vlb_terms` with eps_pred under a stop-gradient, so that the bound trains the variance
    channels only; it is not reweighted (DiT's default loss type).

    Args: output: (B, H, W, 2C) float32; x0, x_t, eps: (B, H, W, C); t: (B,) int steps.
    Returns: L_simple + L_vlb, {"mse": L_simple, "vlb": L_vlb}.
    """
    eps_pred, v = jnp.split(output.astype(jnp.float32), 2, axis=-1)
    frozen = jnp.concatenate([jax.lax.stop_gradient(eps_pred), v], axis=-1)
    terms = {
        "mse": jnp.mean(jnp.square(eps_pred - eps)),
        "vlb": jnp.mean(vlb_terms(schedule, frozen, x0, x_t, t)),
    }
    return terms["mse"] + terms["vlb"], terms
