import jax
import jax.numpy as jnp
import numpy as np

from sara_jax.objective import transport


def test_interpolant_endpoints_and_velocity_is_its_time_derivative():
    k1, k2 = jax.random.split(jax.random.key(0))
    x0 = jax.random.normal(k1, (3, 4, 4, 2))
    eps = jax.random.normal(k2, (3, 4, 4, 2))
    np.testing.assert_allclose(transport.interpolate(x0, eps, jnp.zeros(3)), x0)
    np.testing.assert_allclose(transport.interpolate(x0, eps, jnp.ones(3)), eps)
    t = jnp.array([0.1, 0.5, 0.9])
    _, dxdt = jax.jvp(lambda s: transport.interpolate(x0, eps, s), (t,), (jnp.ones(3),))
    np.testing.assert_allclose(dxdt, transport.velocity_target(x0, eps), rtol=1e-6, atol=1e-6)
    # Each example uses its own t.
    mixed = transport.interpolate(x0, eps, t)
    np.testing.assert_allclose(mixed[1], 0.5 * x0[1] + 0.5 * eps[1], rtol=1e-6)


def test_time_is_uniform_on_unit_interval():
    t = np.asarray(transport.sample_time(jax.random.key(1), (20000,)))
    assert t.dtype == np.float32 and t.min() >= 0 and t.max() < 1
    assert abs(t.mean() - 0.5) < 0.01 and abs(t.var() - 1 / 12) < 0.005
