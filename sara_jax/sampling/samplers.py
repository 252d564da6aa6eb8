"""REPA's samplers for the linear path x_t = (1 - t) x0 + t eps, from t = 1 (noise) to 0.

- `euler_ode` / `heun_ode`: the probability-flow ODE dx/dt = v(x, t) on t = linspace(1, 0, N+1);
  Heun corrects every step but the last (which would evaluate v at t = 0).
- `euler_maruyama_sde`: the reverse SDE with diffusion w(t) = 2t on t = linspace(1, 0.04, N)
  followed by 0: drift d = v - w/2 * score, score = -(x + (1 - t) v) / t (from
  x = (1 - t) x0 + t eps and v = eps - x0); x += d dt + sqrt(w |dt|) z, and the last step
  0.04 -> 0 is the deterministic drift alone.

Classifier-free guidance (`guided_velocity`) acts on the velocity; the SDE drift is affine in v
with weights summing to one, so this is the same as guiding the drift, as REPA does.
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp

VelocityFn = Callable[[jax.Array, jax.Array, jax.Array], jax.Array]

SDE_LAST_T = 0.04  # REPA's last stochastic time; from there one deterministic step to 0.


def conditional_and_unconditional(
    fn: Callable[[jax.Array, jax.Array, jax.Array], jax.Array],
    x: jax.Array,
    t: jax.Array,
    y: jax.Array,
    null_label: int,
) -> tuple[jax.Array, jax.Array]:
    """fn's outputs for labels y and for the null label, from one call on the doubled batch.

    Args: x (B, ...), t (B,), y (B,). Returns: (conditional, unconditional), each (B, ...).
    """
    out = fn(
        jnp.concatenate([x, x]),
        jnp.concatenate([t, t]),
        jnp.concatenate([y, jnp.full_like(y, null_label)]),
    )
    return tuple(jnp.split(out, 2))


def guided_velocity(
    velocity_fn: VelocityFn,
    null_label: int,
    cfg_scale: float,
    interval: tuple[float, float] = (0.0, 1.0),
) -> VelocityFn:
    """Classifier-free guidance v_uncond + w (v_cond - v_uncond) where low <= t <= high.

    Args:
      velocity_fn: (x (B, H, W, C), t (B,), y (B,)) -> v (B, H, W, C).
      null_label: the label of the unconditional model.
      cfg_scale: w; 1 is no guidance (and costs no extra evaluation).
      interval: (low, high) guidance interval; outside it the conditional velocity is used.
    """
    if cfg_scale == 1.0:
        return velocity_fn
    low, high = interval

    def guided(x: jax.Array, t: jax.Array, y: jax.Array) -> jax.Array:
        v_cond, v_uncond = conditional_and_unconditional(velocity_fn, x, t, y, null_label)
        inside = ((t >= low) & (t <= high)).reshape((-1,) + (1,) * (x.ndim - 1))
        return jnp.where(inside, v_uncond + cfg_scale * (v_cond - v_uncond), v_cond)

    return guided


def _velocity(velocity_fn: VelocityFn, x: jax.Array, t: jax.Array, labels: jax.Array):
    return velocity_fn(x, jnp.full((x.shape[0],), t, x.dtype), labels)


def euler_ode(
    velocity_fn: VelocityFn, noise: jax.Array, labels: jax.Array, num_steps: int
) -> jax.Array:
    """Euler steps of the ODE on t = linspace(1, 0, num_steps + 1).

    Args:
      noise: (B, H, W, C) x at t = 1; labels: (B,).
    Returns: (B, H, W, C) x at t = 0.
    """
    times = jnp.linspace(1.0, 0.0, num_steps + 1)

    def step(x: jax.Array, i: jax.Array) -> tuple[jax.Array, None]:
        t, t_next = times[i], times[i + 1]
        return x + (t_next - t) * _velocity(velocity_fn, x, t, labels), None

    x, _ = jax.lax.scan(step, noise, jnp.arange(num_steps))
    return x


def heun_ode(
    velocity_fn: VelocityFn, noise: jax.Array, labels: jax.Array, num_steps: int
) -> jax.Array:
    """Heun's method on t = linspace(1, 0, num_steps + 1); the last step is plain Euler.

    Costs 2 num_steps - 1 velocity evaluations. Shapes as `euler_ode`.
    """
    times = jnp.linspace(1.0, 0.0, num_steps + 1)

    def step(x: jax.Array, i: jax.Array) -> tuple[jax.Array, None]:
        t, t_next = times[i], times[i + 1]
        v = _velocity(velocity_fn, x, t, labels)
        euler = x + (t_next - t) * v

        def corrected() -> jax.Array:
            v_next = _velocity(velocity_fn, euler, t_next, labels)
            return x + (t_next - t) * 0.5 * (v + v_next)

        return jax.lax.cond(i < num_steps - 1, corrected, lambda: euler), None

    x, _ = jax.lax.scan(step, noise, jnp.arange(num_steps))
    return x


def sde_drift(v: jax.Array, x: jax.Array, t: jax.Array) -> jax.Array:
    """Reverse-SDE drift v - w(t)/2 * score with w(t) = 2t and score = -(x + (1 - t) v) / t."""
    score = -(x + (1.0 - t) * v) / t
    return v - t * score


def euler_maruyama_sde(
    velocity_fn: VelocityFn,
    noise: jax.Array,
    labels: jax.Array,
    num_steps: int,
    key: jax.Array,
) -> jax.Array:
    """Euler-Maruyama on t = [linspace(1, 0.04, num_steps), 0] (num_steps velocity calls).

    Args:
      noise: (B, H, W, C) x at t = 1; labels: (B,); key: PRNG key of the step noise.
    Returns: (B, H, W, C) x at t = 0.
    """
    times = jnp.append(jnp.linspace(1.0, SDE_LAST_T, num_steps), 0.0)

    def step(x: jax.Array, i: jax.Array) -> tuple[jax.Array, None]:
        t, t_next = times[i], times[i + 1]
        dt = t_next - t
        drift = sde_drift(_velocity(velocity_fn, x, t, labels), x, t)
        z = jax.random.normal(jax.random.fold_in(key, i), x.shape, x.dtype)
        return x + drift * dt + jnp.sqrt(2.0 * t * jnp.abs(dt)) * z, None

    x, _ = jax.lax.scan(step, noise, jnp.arange(num_steps - 1))
    t = times[num_steps - 1]
    return x + (0.0 - t) * sde_drift(_velocity(velocity_fn, x, t, labels), x, t)


SAMPLERS = ("sde", "euler", "heun")


def check_method(method: str, field: str = "sample.method") -> None:
    """Raises a ValueError naming the config `field` unless `method` is one of SAMPLERS."""
    if method not in SAMPLERS:
        expected = f"one of {SAMPLERS} for model.family='sit'"
        raise ValueError(f"config.{field} must be {expected}, got {method!r}")


def sample(
    method: str,
    velocity_fn: VelocityFn,
    noise: jax.Array,
    labels: jax.Array,
    num_steps: int,
    key: jax.Array,
) -> jax.Array:
    """x at t = 0 from `noise` at t = 1 with the named sampler ("sde", "euler" or "heun")."""
    if method == "sde":
        return euler_maruyama_sde(velocity_fn, noise, labels, num_steps, key)
    if method == "euler":
        return euler_ode(velocity_fn, noise, labels, num_steps)
    if method == "heun":
        return heun_ode(velocity_fn, noise, labels, num_steps)
    raise ValueError(f"sampler must be one of {SAMPLERS}, got {method!r}")
