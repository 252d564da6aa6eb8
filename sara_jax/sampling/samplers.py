"""REPA's samplers for the linear path x_t = (1 - t) x0 + t eps, from t = 1 (noise) to 0.

- `euler_ode` / `heun_ode`: the probability-flow ODE dx/dt = v(x, t) on t = linspace(1, 0, N+1);
  Heun corrects every step but the last (which would evaluate v at t = 0).
- `euler_maruyama_sde`: the reverse SDE with diffusion w(t) = 2t on t = linspace(1, 0.04, N)
  followed by 0: drift d = v - w/2 * score, score = -(x + (1 - t) v) / t (from
  x = (1 - t) x0 + t eps and v = eps - x0); x += d dt + sqrt(w |dt|) z, and the last step
  0.04 -> 0 is the deterministic drift alone.

Classifier-free guidance (`Guidance`) acts on the velocity; the SDE drift is affine in v with
weights summing to one, so this is the same as guiding the drift, as REPA does. Which steps are
guided is decided before sampling, on the host, exactly as REPA's loop decides it: on its
float64 time grid (`time_grid`), by the step's current time (Heun's corrector included). A
float32 grid would read 0.7 as 0.70000005 at 50, 100 or 200 steps and leave that step unguided.
The jitted loop takes the pattern as a constant (`scan_steps`), and an unguided step evaluates a
batch of B, a guided one 2B.
"""

from collections.abc import Callable
from fractions import Fraction
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from sara_jax.io.errors import InputError

VelocityFn = Callable[[jax.Array, jax.Array, jax.Array], jax.Array]

SDE_LAST_T = 0.04  # REPA's last stochastic time; from there one deterministic step to 0.


class Guidance(NamedTuple):
    """Classifier-free guidance v_uncond + scale (v_cond - v_uncond) at the steps whose time t
    has low <= t <= high (`interval`); scale 1 is no guidance (and no extra evaluation)."""

    null_label: int
    scale: float = 1.0
    interval: tuple[float, float] = (0.0, 1.0)


def linspace(start: float, end: float, num: int) -> np.ndarray:
    """`num` float64 points from `start` to `end`, as torch.linspace computes them on a CPU:
    start + step i for the first half, end - step (num - 1 - i) for the rest, each rounded once
    (its kernel's fused multiply-add; done here in exact rationals), so that REPA's grid is
    matched to the bit."""
    if num == 1:
        return np.array([start], np.float64)
    step = Fraction((end - start) / (num - 1))
    first, last = Fraction(start), Fraction(end)
    points = [first + step * i if i < num // 2 else last - step * (num - 1 - i) for i in range(num)]
    return np.array([float(p) for p in points], np.float64)


def time_grid(method: str, num_steps: int) -> np.ndarray:
    """The float64 times of a sampler: (num_steps + 1,), from 1 down to 0.

    The ODEs step through linspace(1, 0, num_steps + 1); the SDE through
    linspace(1, 0.04, num_steps) and then to 0.
    """
    if method == "sde":
        return np.append(linspace(1.0, SDE_LAST_T, num_steps), 0.0)
    return linspace(1.0, 0.0, num_steps + 1)


def guided_steps(times: np.ndarray, guidance: Guidance | None) -> np.ndarray:
    """Whether each step times[i] -> times[i + 1] is guided: (len(times) - 1,) bool.

    REPA's test, in float64 on the host: scale != 1 and low <= times[i] <= high. The step's
    current time decides for Heun's corrector too.
    """
    if guidance is None or guidance.scale == 1.0:
        return np.zeros(len(times) - 1, bool)
    low, high = guidance.interval
    return (times[:-1] >= low) & (times[:-1] <= high)


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


def guided_velocity(velocity_fn: VelocityFn, guidance: Guidance) -> VelocityFn:
    """The guided velocity v_uncond + w (v_cond - v_uncond), from one call on 2B.

    Args:
      velocity_fn: (x (B, H, W, C), t (B,), y (B,)) -> v (B, H, W, C).
    """

    def guided(x: jax.Array, t: jax.Array, y: jax.Array) -> jax.Array:
        v_cond, v_uncond = conditional_and_unconditional(velocity_fn, x, t, y, guidance.null_label)
        return v_uncond + guidance.scale * (v_cond - v_uncond)

    return guided


def scan_steps(
    step: Callable[[jax.Array, jax.Array, bool], jax.Array],
    x: jax.Array,
    pattern: np.ndarray,
) -> jax.Array:
    """x after `step(x, i, guided)` for i = 0 .. len(pattern) - 1, guided = pattern[i].

    Each run of steps with the same `pattern` value is one `lax.scan` whose `guided` is a
    Python constant, so an unguided step traces and runs a batch of B and a guided one 2B,
    with no branch in the loop (XLA's CPU convolutions, the SiT's patch embedding among them,
    are much slower inside a conditional).
    """
    i = 0
    while i < len(pattern):
        end = i + 1
        while end < len(pattern) and pattern[end] == pattern[i]:
            end += 1
        guided = bool(pattern[i])
        x, _ = jax.lax.scan(lambda x, k, g=guided: (step(x, k, g), None), x, jnp.arange(i, end))
        i = end
    return x


def _chosen(velocity_fn: VelocityFn, guidance: Guidance | None, guided: bool) -> VelocityFn:
    return guided_velocity(velocity_fn, guidance) if guided else velocity_fn


def _velocity(velocity_fn: VelocityFn, x: jax.Array, t: jax.Array, labels: jax.Array):
    return velocity_fn(x, jnp.full((x.shape[0],), t, x.dtype), labels)


def euler_ode(
    velocity_fn: VelocityFn,
    noise: jax.Array,
    labels: jax.Array,
    num_steps: int,
    guidance: Guidance | None = None,
) -> jax.Array:
    """Euler steps of the ODE on t = linspace(1, 0, num_steps + 1).

    Args:
      velocity_fn: (x (B, H, W, C), t (B,), y (B,)) -> v, unguided.
      noise: (B, H, W, C) x at t = 1; labels: (B,); guidance: None for none.
    Returns: (B, H, W, C) x at t = 0.
    """
    grid = time_grid("euler", num_steps)
    times = jnp.asarray(grid, noise.dtype)

    def step(x: jax.Array, i: jax.Array, guided: bool) -> jax.Array:
        t, t_next = times[i], times[i + 1]
        return x + (t_next - t) * _velocity(_chosen(velocity_fn, guidance, guided), x, t, labels)

    return scan_steps(step, noise, guided_steps(grid, guidance))


def heun_ode(
    velocity_fn: VelocityFn,
    noise: jax.Array,
    labels: jax.Array,
    num_steps: int,
    guidance: Guidance | None = None,
) -> jax.Array:
    """Heun's method on t = linspace(1, 0, num_steps + 1); the last step is plain Euler.

    Costs 2 num_steps - 1 velocity evaluations; the corrector is guided where its step is.
    Arguments and shapes as `euler_ode`.
    """
    grid = time_grid("heun", num_steps)
    times = jnp.asarray(grid, noise.dtype)
    pattern = guided_steps(grid, guidance)

    def step(x: jax.Array, i: jax.Array, guided: bool, correct: bool = True) -> jax.Array:
        velocity = _chosen(velocity_fn, guidance, guided)
        t, t_next = times[i], times[i + 1]
        v = _velocity(velocity, x, t, labels)
        euler = x + (t_next - t) * v
        if not correct:
            return euler
        return x + (t_next - t) * 0.5 * (v + _velocity(velocity, euler, t_next, labels))

    x = scan_steps(step, noise, pattern[:-1])
    return step(x, jnp.asarray(num_steps - 1), bool(pattern[-1]), correct=False)


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
    guidance: Guidance | None = None,
) -> jax.Array:
    """Euler-Maruyama on t = [linspace(1, 0.04, num_steps), 0] (num_steps velocity calls).

    Args:
      velocity_fn, labels, guidance: as `euler_ode`.
      noise: (B, H, W, C) x at t = 1; key: PRNG key of the step noise.
    Returns: (B, H, W, C) x at t = 0.
    """
    grid = time_grid("sde", num_steps)
    times = jnp.asarray(grid, noise.dtype)
    pattern = guided_steps(grid, guidance)

    def drift(x: jax.Array, t: jax.Array, guided: bool) -> jax.Array:
        return sde_drift(_velocity(_chosen(velocity_fn, guidance, guided), x, t, labels), x, t)

    def step(x: jax.Array, i: jax.Array, guided: bool) -> jax.Array:
        t, t_next = times[i], times[i + 1]
        dt = t_next - t
        z = jax.random.normal(jax.random.fold_in(key, i), x.shape, x.dtype)
        return x + drift(x, t, guided) * dt + jnp.sqrt(2.0 * t * jnp.abs(dt)) * z

    x = scan_steps(step, noise, pattern[:-1])
    t = times[num_steps - 1]
    return x + (0.0 - t) * drift(x, t, bool(pattern[-1]))


SAMPLERS = ("sde", "euler", "heun")


def check_method(method: str, field: str = "sample.method") -> None:
    """Raises an InputError naming the config `field` unless `method` is one of SAMPLERS."""
    if method not in SAMPLERS:
        expected = f"one of {SAMPLERS} for model.family='sit'"
        raise InputError(f"config.{field} must be {expected}, got {method!r}")


def sample(
    method: str,
    velocity_fn: VelocityFn,
    noise: jax.Array,
    labels: jax.Array,
    num_steps: int,
    key: jax.Array,
    guidance: Guidance | None = None,
) -> jax.Array:
    """x at t = 0 from `noise` at t = 1 with the named sampler ("sde", "euler" or "heun")."""
    if method == "sde":
        return euler_maruyama_sde(velocity_fn, noise, labels, num_steps, key, guidance)
    if method == "euler":
        return euler_ode(velocity_fn, noise, labels, num_steps, guidance)
    if method == "heun":
        return heun_ode(velocity_fn, noise, labels, num_steps, guidance)
    raise ValueError(f"sampler must be one of {SAMPLERS}, got {method!r}")
