import jax.numpy as jnp
import numpy as np

from sara_jax import images, sampling


def test_euler_is_exact_for_a_constant_velocity_field():
    noise = jnp.ones((2, 4, 4, 3))
    c = jnp.arange(3.0)

    def velocity(x, t, y):
        return jnp.broadcast_to(c, x.shape)

    x0 = sampling.euler_ode(velocity, noise, jnp.zeros(2, jnp.int32), num_steps=7)
    np.testing.assert_allclose(x0, noise - c, rtol=1e-6)


def test_euler_visits_times_from_one_to_zero():
    seen = []

    def velocity(x, t, y):
        seen.append(t)
        return jnp.zeros_like(x) + t[:, None, None, None]

    # dx/dt = t from t=1 to 0 with N Euler steps: x0 = x1 - sum_i t_i / N, t_i = 1 - i/N.
    n = 4
    x0 = sampling.euler_ode(velocity, jnp.zeros((1, 1, 1, 1)), jnp.zeros(1, jnp.int32), n)
    expected = -sum(1 - i / n for i in range(n)) / n
    np.testing.assert_allclose(x0.ravel(), [expected], rtol=1e-6)


def test_classifier_free_guidance_combines_conditional_and_null_predictions():
    null = 10

    def velocity(x, t, y):
        return x * 0 + jnp.where(y == null, 1.0, 3.0)[:, None, None, None]

    x = jnp.zeros((2, 2, 2, 1))
    t = jnp.ones(2)
    y = jnp.array([0, 5])
    guided = sampling.guided_velocity(velocity, null, cfg_scale=1.5)
    np.testing.assert_allclose(guided(x, t, y), 1.0 + 1.5 * (3.0 - 1.0))
    assert sampling.guided_velocity(velocity, null, cfg_scale=1.0) is velocity


def test_grid_png_roundtrip(tmp_path):
    from PIL import Image

    x = np.linspace(-1, 1, 2 * 3 * 4 * 5 * 3).reshape(2, 3, 4, 5, 3)
    u8 = images.to_uint8(x)
    assert u8.dtype == np.uint8 and u8.min() == 0 and u8.max() == 255
    images.save_grid(u8, tmp_path / "g.png", pad=1)
    grid = np.asarray(Image.open(tmp_path / "g.png"))
    assert grid.shape == (2 * 5 + 1, 3 * 6 + 1, 3)
    np.testing.assert_array_equal(grid[1:5, 7:12], u8[0, 1])
    assert [p.name for p in tmp_path.iterdir()] == ["g.png"]
