import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sara_jax.objective import losses

RNG = np.random.default_rng(0)


def np_normalize(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def np_autocorrelation(h):
    out = np.zeros((h.shape[0], h.shape[1], h.shape[1]))
    for b in range(h.shape[0]):
        for i in range(h.shape[1]):
            for j in range(h.shape[1]):
                hi, hj = h[b, i], h[b, j]
                out[b, i, j] = hi @ hj / (np.linalg.norm(hi) * np.linalg.norm(hj))
    return out


def np_log_sigmoid(x):
    return -np.log1p(np.exp(-x))


def test_velocity_loss_is_mean_squared_error():
    pred, target = RNG.normal(size=(2, 4, 4, 3)), RNG.normal(size=(2, 4, 4, 3))
    np.testing.assert_allclose(
        losses.velocity_loss(jnp.array(pred), jnp.array(target)),
        np.mean((pred - target) ** 2),
        rtol=1e-5,
    )


def test_patch_loss_hand_case():
    z = np.array([[[1.0, 0.0], [0.0, 2.0]]])
    h = np.array([[[1.0, 1.0], [0.0, -3.0]]])
    # cosines: 1/sqrt(2) and -1 -> loss = -mean = -(0.7071 - 1) / 2
    expected = -(1 / np.sqrt(2) - 1.0) / 2
    np.testing.assert_allclose(losses.patch_alignment_loss(z, h), expected, rtol=1e-6)


def test_patch_loss_matches_numpy_and_is_minus_one_for_positive_rescaling():
    z, h = RNG.normal(size=(3, 5, 7)), RNG.normal(size=(3, 5, 7))
    expected = -np.mean(np.sum(np_normalize(z) * np_normalize(h), -1))
    np.testing.assert_allclose(losses.patch_alignment_loss(z, h), expected, rtol=1e-5)
    scale = RNG.uniform(0.1, 10.0, size=(3, 5, 1))
    np.testing.assert_allclose(losses.patch_alignment_loss(z, scale * z), -1.0, rtol=1e-6)


def test_autocorrelation_matches_numpy_and_is_symmetric_with_unit_diagonal():
    h = RNG.normal(size=(2, 6, 4))
    a = np.asarray(losses.autocorrelation(jnp.array(h)))
    np.testing.assert_allclose(a, np_autocorrelation(h), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(a, a.transpose(0, 2, 1), atol=1e-7)
    np.testing.assert_allclose(np.diagonal(a, axis1=1, axis2=2), 1.0, rtol=1e-6)


def test_structural_loss_matches_numpy_for_both_reductions():
    z, h = RNG.normal(size=(3, 5, 4)), RNG.normal(size=(3, 5, 8))  # widths may differ
    diff = np_autocorrelation(z) - np_autocorrelation(h)
    frob2 = np.sum(diff**2, axis=(1, 2))
    np.testing.assert_allclose(losses.structural_loss(z, h, "sum"), frob2.mean(), rtol=1e-5)
    np.testing.assert_allclose(losses.structural_loss(z, h, "mean"), frob2.mean() / 25, rtol=1e-5)


def test_structural_loss_is_zero_under_rotation_and_scaling():
    z = RNG.normal(size=(2, 9, 6))
    rotation, _ = np.linalg.qr(RNG.normal(size=(6, 6)))
    h = 3.0 * z @ rotation
    assert float(losses.structural_loss(z, h, "sum")) < 1e-10
    assert float(losses.structural_loss(z, RNG.normal(size=(2, 9, 6)), "sum")) > 1.0


def test_structural_loss_rejects_unknown_reduction():
    z = jnp.ones((1, 2, 3))
    with pytest.raises(ValueError, match="struc_reduction"):
        losses.structural_loss(z, z, "max")


def test_discriminator_and_adversarial_losses_match_bce():
    real, fake = RNG.normal(size=8) * 3, RNG.normal(size=8) * 3
    expected_d = -np.mean(np_log_sigmoid(real)) - np.mean(np.log(1 - 1 / (1 + np.exp(-fake))))
    np.testing.assert_allclose(losses.discriminator_loss(real, fake), expected_d, rtol=1e-5)
    np.testing.assert_allclose(
        losses.adversarial_loss(fake), -np.mean(np_log_sigmoid(fake)), rtol=1e-5
    )
    # At logits 0, D says 1/2 everywhere: each expectation is log 2.
    zeros = jnp.zeros(4)
    np.testing.assert_allclose(losses.discriminator_loss(zeros, zeros), 2 * np.log(2), rtol=1e-6)
    np.testing.assert_allclose(losses.adversarial_loss(zeros), np.log(2), rtol=1e-6)


def test_adversarial_loss_is_non_saturating_and_stable_for_large_logits():
    # -log D(h) keeps a gradient where D confidently rejects h (the saturating form does not).
    grad = jax.grad(lambda f: losses.adversarial_loss(f))(jnp.array([-30.0]))
    assert float(grad[0]) < -0.99
    assert np.isfinite(float(losses.discriminator_loss(jnp.array([100.0]), jnp.array([-100.0]))))


def test_losses_compute_in_float32_from_bfloat16_inputs():
    z = jnp.asarray(RNG.normal(size=(2, 4, 8)), jnp.bfloat16)
    h = jnp.asarray(RNG.normal(size=(2, 4, 8)), jnp.bfloat16)
    for value in [
        losses.patch_alignment_loss(z, h),
        losses.structural_loss(z, h, "mean"),
        losses.autocorrelation(h),
        losses.adversarial_loss(h[:, 0, 0]),
        losses.velocity_loss(z, h),
    ]:
        assert value.dtype == jnp.float32
