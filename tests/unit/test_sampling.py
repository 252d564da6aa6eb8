import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sara_jax.io import files
from sara_jax.sampling import samplers


def test_euler_is_exact_for_a_constant_velocity_field():
    noise = jnp.ones((2, 4, 4, 3))
    c = jnp.arange(3.0)

    def velocity(x, t, y):
        return jnp.broadcast_to(c, x.shape)

    x0 = samplers.euler_ode(velocity, noise, jnp.zeros(2, jnp.int32), num_steps=7)
    np.testing.assert_allclose(x0, noise - c, rtol=1e-6)


def test_euler_visits_times_from_one_to_zero():
    seen = []

    def velocity(x, t, y):
        seen.append(t)
        return jnp.zeros_like(x) + t[:, None, None, None]

    # dx/dt = t from t=1 to 0 with N Euler steps: x0 = x1 - sum_i t_i / N, t_i = 1 - i/N.
    n = 4
    x0 = samplers.euler_ode(velocity, jnp.zeros((1, 1, 1, 1)), jnp.zeros(1, jnp.int32), n)
    expected = -sum(1 - i / n for i in range(n)) / n
    np.testing.assert_allclose(x0.ravel(), [expected], rtol=1e-6)


def test_classifier_free_guidance_combines_conditional_and_null_predictions():
    null = 10

    def velocity(x, t, y):
        return x * 0 + jnp.where(y == null, 1.0, 3.0)[:, None, None, None]

    x = jnp.zeros((2, 2, 2, 1))
    t = jnp.ones(2)
    y = jnp.array([0, 5])
    guided = samplers.guided_velocity(velocity, samplers.Guidance(null, 1.5))
    np.testing.assert_allclose(guided(x, t, y), 1.0 + 1.5 * (3.0 - 1.0))
    # Scale 1 guides no step, so the sampler calls the network itself.
    grid = samplers.time_grid("euler", 10)
    assert not samplers.guided_steps(grid, samplers.Guidance(null, 1.0)).any()


def test_grid_png_roundtrip(tmp_path):
    from PIL import Image

    x = np.linspace(-1, 1, 2 * 3 * 4 * 5 * 3).reshape(2, 3, 4, 5, 3)
    u8 = files.to_uint8(x)
    assert u8.dtype == np.uint8 and u8.min() == 0 and u8.max() == 255
    files.save_grid(u8, tmp_path / "g.png", pad=1)
    grid = np.asarray(Image.open(tmp_path / "g.png"))
    assert grid.shape == (2 * 5 + 1, 3 * 6 + 1, 3)
    np.testing.assert_array_equal(grid[1:5, 7:12], u8[0, 1])
    assert [p.name for p in tmp_path.iterdir()] == ["g.png"]


# Gaussian data x0 ~ N(mu, s^2) per dimension: x_t = (1 - t) x0 + t eps is Gaussian too, and
# the exact velocity E[eps - x0 | x_t] is affine in x_t.
MU, S = 1.5, 0.5


def gaussian_velocity(mu: float, s: float):
    def velocity(x, t, y):
        t = t.reshape((-1,) + (1,) * (x.ndim - 1))
        var = (1 - t) ** 2 * s**2 + t**2
        return (t - (1 - t) * s**2) / var * (x - (1 - t) * mu) - mu

    return velocity


def test_gaussian_velocity_is_exact_at_the_ends():
    x = jnp.linspace(-2, 2, 5).reshape(5, 1, 1, 1)
    v = gaussian_velocity(MU, S)
    np.testing.assert_allclose(v(x, jnp.zeros(5), None), -x, rtol=1e-6)  # t=0: v = eps - x0
    np.testing.assert_allclose(v(x, jnp.ones(5), None), x - MU, rtol=1e-6)  # t=1: x = eps


def ode_error(method: str, steps: int) -> float:
    """Max distance from the exact flow map x0 = mu + s * eps (monotone: quantiles map to
    quantiles) of noise quantiles -3 .. 3."""
    z = jnp.linspace(-3, 3, 13).reshape(13, 1, 1, 1)
    labels = jnp.zeros(13, jnp.int32)
    x0 = samplers.sample(method, gaussian_velocity(MU, S), z, labels, steps, jax.random.key(0))
    return float(jnp.abs(x0 - (MU + S * z)).max())


def test_odes_map_noise_quantiles_to_data_quantiles_at_their_order():
    assert ode_error("heun", 50) < 2e-3
    assert ode_error("euler", 250) < 1.5e-2
    # Second order for Heun (2.5x the steps: ~6x smaller error), first order for Euler.
    assert 5.0 < ode_error("heun", 20) / ode_error("heun", 50) < 8.0
    assert 4.0 < ode_error("euler", 50) / ode_error("euler", 250) < 6.0


def test_sde_samples_have_the_data_mean_and_std():
    noise = jax.random.normal(jax.random.key(1), (4096, 2, 2, 2))
    labels = jnp.zeros(4096, jnp.int32)
    x0 = jax.jit(samplers.euler_maruyama_sde, static_argnums=(0, 3))(
        gaussian_velocity(MU, S), noise, labels, 250, jax.random.key(2)
    )
    # 16384 values: the standard errors of mean and std are ~0.004 and ~0.003.
    assert abs(float(x0.mean()) - MU) < 0.02
    assert abs(float(x0.std()) - S) < 0.02
    # Not the ODE: the same noise lands elsewhere.
    ode = samplers.heun_ode(gaussian_velocity(MU, S), noise, labels, 20)
    assert float(jnp.abs(x0 - ode).mean()) > 0.1


def test_sde_uses_repas_time_grid():
    seen = []

    def velocity(x, t, y):
        seen.append(t)
        return jnp.zeros_like(x)

    with jax.disable_jit():
        samplers.euler_maruyama_sde(
            velocity, jnp.ones((1, 1, 1, 1)), jnp.zeros(1, jnp.int32), 5, jax.random.key(0)
        )
    times = [float(t[0]) for t in seen]
    np.testing.assert_allclose(times, np.linspace(1.0, 0.04, 5), rtol=1e-6)


def test_heun_corrects_all_but_the_last_step():
    calls = []

    def velocity(x, t, y):
        calls.append(float(t[0]))
        return jnp.zeros_like(x)

    with jax.disable_jit():
        samplers.heun_ode(velocity, jnp.ones((1, 1, 1, 1)), jnp.zeros(1, jnp.int32), 4)
    assert len(calls) == 2 * 4 - 1 and 0.0 not in calls


def class_velocity(x, t, y):
    """The exact velocity of Gaussian data whose mean depends on the class: guidance matters."""
    return jax.vmap(lambda xi, ti, yi: gaussian_velocity(MU + yi, S)(xi[None], ti[None], None)[0])(
        x, t, y.astype(jnp.float32)
    )


def test_guidance_scale_one_and_outside_the_interval_is_conditional():
    null = 3
    z = jax.random.normal(jax.random.key(3), (6, 2, 2, 1))
    labels = jnp.array([0, 1, 2, 0, 1, 2])
    conditional = samplers.heun_ode(class_velocity, z, labels, 10)
    w1 = samplers.Guidance(null, 1.0)
    np.testing.assert_array_equal(samplers.heun_ode(class_velocity, z, labels, 10, w1), conditional)
    # An interval that no step time falls in: guidance never acts, and costs nothing.
    off = samplers.Guidance(null, 4.0, (0.42, 0.43))
    np.testing.assert_array_equal(
        samplers.heun_ode(class_velocity, z, labels, 10, off), conditional
    )
    on = samplers.Guidance(null, 4.0, (0.0, 0.7))
    guided = samplers.heun_ode(class_velocity, z, labels, 10, on)
    assert float(jnp.abs(guided - conditional).max()) > 0.1


def test_the_guidance_pattern_is_decided_on_repas_float64_grid():
    grid = samplers.time_grid("euler", 50)
    # A float32 grid reads the point 0.7 as 0.70000005, which would fall outside [0, 0.7].
    assert float(jnp.linspace(1.0, 0.0, 51)[15]) > 0.7
    pattern = samplers.guided_steps(grid, samplers.Guidance(10, 1.8, (0.0, 0.7)))
    assert grid[15] == 0.7 and pattern[15] and not pattern[14]
    assert pattern.sum() == 35 and pattern[15:].all()
    # The SDE grid: linspace(1, 0.04, 250), then 0; REPA's FID recipe guides 172 of 250 steps.
    sde = samplers.time_grid("sde", 250)
    assert sde[0] == 1.0 and sde[249] == 0.04 and sde[250] == 0.0
    assert samplers.guided_steps(sde, samplers.Guidance(10, 1.8, (0.0, 0.7))).sum() == 172


def evaluations(method: str, num_steps: int, guidance, batch: int = 2):
    """(t, batch size) of every network evaluation the jitted sampler runs, in order."""
    seen = []

    def record(t, n):
        seen.append((round(float(t), 6), int(n)))

    def velocity(x, t, y):
        jax.debug.callback(record, t[0], len(x), ordered=True)
        return class_velocity(x, t, y)

    z, labels = jnp.ones((batch, 2, 2, 1)), jnp.arange(batch) % 3
    run = jax.jit(
        lambda z, labels: samplers.sample(
            method, velocity, z, labels, num_steps, jax.random.key(0), guidance
        )
    )
    jax.block_until_ready(run(z, labels))
    return seen


def test_unguided_steps_evaluate_a_batch_of_b_and_guided_ones_2b():
    calls = evaluations("euler", 50, samplers.Guidance(3, 1.8, (0.0, 0.7)))
    assert len(calls) == 50
    assert [n for _, n in calls] == [2] * 15 + [4] * 35
    assert calls[15] == (0.7, 4)


def test_heuns_corrector_is_guided_by_its_steps_current_time():
    # Step 1 goes 0.9 -> 0.8 with the interval [0, 0.85]: its corrector, evaluated at 0.8,
    # follows t_cur = 0.9 and is unguided; step 2's predictor at 0.8 is guided.
    calls = evaluations("heun", 10, samplers.Guidance(3, 4.0, (0.0, 0.85)))
    assert calls[:6] == [(1.0, 2), (0.9, 2), (0.9, 2), (0.8, 2), (0.8, 4), (0.7, 4)]
    assert len(calls) == 19


def repa_loop(method: str, z, labels, num_steps: int, guidance, key=None):
    """A plain float64 loop with REPA's per-step decisions: guided where low <= t_cur <= high,
    the corrector by t_cur, one batch of B or 2B per evaluation; the reference for the jitted
    samplers (the SDE's noise is the jitted sampler's, drawn the same way)."""
    grid = samplers.time_grid(method, num_steps)
    low, high = guidance.interval
    x = np.asarray(z, np.float64)

    def v(x, t, guided, to_drift=lambda d: d):  # REPA guides the SDE's drift.
        t_b = jnp.full((len(x),), t, jnp.float32)
        x32 = jnp.asarray(x, jnp.float32)
        cond = to_drift(np.asarray(class_velocity(x32, t_b, labels), np.float64))
        if not guided:
            return cond
        null = jnp.full_like(labels, guidance.null_label)
        uncond = to_drift(np.asarray(class_velocity(x32, t_b, null), np.float64))
        return uncond + guidance.scale * (cond - uncond)

    for i in range(num_steps):
        t, t_next = grid[i], grid[i + 1]
        guided = guidance.scale != 1.0 and low <= t <= high
        if method == "sde":  # drift v - w/2 score = v + (x + (1 - t) v) with w = 2t
            d = v(x, t, guided, lambda u, x=x, t=t: u + x + (1 - t) * u)
            if i == num_steps - 1:
                return x + (t_next - t) * d
            noise = jax.random.normal(jax.random.fold_in(key, i), x.shape, jnp.float32)
            x = x + d * (t_next - t) + np.sqrt(2 * t * abs(t_next - t)) * np.asarray(noise)
            continue
        d = v(x, t, guided)
        euler = x + (t_next - t) * d
        if method == "heun" and i < num_steps - 1:
            euler = x + (t_next - t) * 0.5 * (d + v(euler, t_next, guided))
        x = euler
    return x


@pytest.mark.parametrize("method", ["euler", "heun", "sde"])
def test_mixed_guidance_matches_a_plain_loop_with_repas_decisions(method):
    z = jax.random.normal(jax.random.key(5), (6, 2, 2, 1))
    labels = jnp.array([0, 1, 2, 0, 1, 2])
    key = jax.random.key(7)
    for guidance in [samplers.Guidance(3, 1.8, (0.0, 0.7)), samplers.Guidance(3, 4.0, (0.3, 0.7))]:
        got = samplers.sample(method, class_velocity, z, labels, 20, key, guidance)
        want = repa_loop(method, z, labels, 20, guidance, key)
        np.testing.assert_allclose(np.asarray(got), want, atol=2e-5)


def test_unknown_sampler_is_named():
    with pytest.raises(ValueError, match=r"sampler must be one of .*got 'ddim'"):
        samplers.sample("ddim", None, None, None, 1, None)
