"""The loss terms of SARA's objective (paper Eq. 3, 6-10), one function each, and iREPA's
normalisation of their targets.

Every function upcasts to float32 first: cosines and norms in half precision were reported to
produce NaNs in REPA's training, and these are cheap next to the networks.
Shapes: representations are (B, N, D) token sets; logits are (B,).
"""

import jax
import jax.numpy as jnp

_NORM_EPS = 1e-12  # torch.nn.functional.normalize's default, so cosines match the reference.


def l2_normalize(x: jax.Array) -> jax.Array:
    """x / max(||x||, 1e-12) along the last axis, in float32."""
    x = x.astype(jnp.float32)
    norm = jnp.sqrt(jnp.sum(x * x, axis=-1, keepdims=True))
    return x / jnp.maximum(norm, _NORM_EPS)


def spatial_zscore(z: jax.Array, alpha: float, eps: float = 1e-6) -> jax.Array:
    """iREPA's spatial normalisation of encoder tokens: (z - alpha mean_N z) / (std_N z + eps),
    mean and std over the token axis per example and channel, in float32.

    The std is the unbiased one (N - 1 in the denominator), torch's `Tensor.std` default that
    iREPA's reference uses. alpha = 1 centres every channel over the tokens (what is common to
    all tokens, the global part, is removed); alpha = 0 only rescales.

    Args: z: (B, N, D), N >= 2. Returns: (B, N, D) float32.
    """
    z = z.astype(jnp.float32)
    mean = jnp.mean(z, axis=1, keepdims=True)
    std = jnp.std(z, axis=1, keepdims=True, ddof=1)
    return (z - alpha * mean) / (std + eps)


def velocity_loss(prediction: jax.Array, target: jax.Array) -> jax.Array:
    """L_velocity (Eq. 3): mean over all elements of (f(x_t, t, y) - v)^2. Shapes (B, ...)."""
    diff = prediction.astype(jnp.float32) - target.astype(jnp.float32)
    return jnp.mean(diff * diff)


def patch_alignment_loss(z_enc: jax.Array, h_den: jax.Array) -> jax.Array:
    """L_patch = -mean_{b,n} cos(z_enc[b, n], h_den[b, n]) (Eq. 6; REPA's projection loss).

    Args: z_enc, h_den: (B, N, D).
    """
    return -jnp.mean(jnp.sum(l2_normalize(z_enc) * l2_normalize(h_den), axis=-1))


def autocorrelation(h: jax.Array) -> jax.Array:
    """A(h)_ij = cos(h_i, h_j) (Eq. 7): token self-similarities. h: (B, N, D) -> (B, N, N)."""
    hn = l2_normalize(h)
    return jnp.einsum("bnd,bmd->bnm", hn, hn)


def structural_loss(z_enc: jax.Array, h_den: jax.Array, reduction: str) -> jax.Array:
    """L_struc = ||A(z_enc) - A(h_den)||_F^2 (Eq. 8) per sample, averaged over the batch.

    Args:
      z_enc, h_den: (B, N, D).
      reduction: "sum" is Eq. 8 as written (a sum over the N^2 entries); "mean" divides by N^2,
        which keeps the term on the velocity loss's scale at beta = 0.5 (the paper does not say
        which it used).
    """
    diff = autocorrelation(z_enc) - autocorrelation(h_den)
    per_sample = jnp.sum(diff * diff, axis=(1, 2))
    if reduction == "mean":
        per_sample = per_sample / (diff.shape[1] * diff.shape[2])
    elif reduction != "sum":
        raise ValueError(f"loss.struc_reduction must be 'mean' or 'sum', got {reduction!r}")
    return jnp.mean(per_sample)


def discriminator_loss(real_logits: jax.Array, fake_logits: jax.Array) -> jax.Array:
    """L_D = -E[log D(z_enc)] - E[log(1 - D(h_den))] with D = sigmoid(logit) (Eq. 9).

    Args: real_logits: (B,) D's logits on encoder features; fake_logits: (B,) on h_den.
    """
    real = real_logits.astype(jnp.float32)
    fake = fake_logits.astype(jnp.float32)
    # -log sigmoid(x) = softplus(-x);  -log(1 - sigmoid(x)) = softplus(x).
    return jnp.mean(jax.nn.softplus(-real)) + jnp.mean(jax.nn.softplus(fake))


def adversarial_loss(fake_logits: jax.Array) -> jax.Array:
    """L_adv = -E[log D(h_den)], the non-saturating generator loss (Eq. 10). fake_logits: (B,)."""
    return jnp.mean(jax.nn.softplus(-fake_logits.astype(jnp.float32)))
