"""ADM's evaluator metrics (guided-diffusion `evaluations/evaluator.py`) on Inception features.

Inputs are the TF InceptionV3 graph's outputs (see `sara_jax.models.inception`):
  pool:    (N, 2048) `pool_3:0` features      -> FID, precision, recall
  spatial: (N, 17, 17, C) `mixed_6/conv:0`     -> sFID, via `spatial_features`
  logits:  (N, 1008) pool @ W_logits, no bias  -> Inception Score
The numbers are only comparable to published ones when computed the way ADM computes them, so
each function notes where it follows (or knowingly departs from) the reference.
"""

import dataclasses
import os
import warnings
import zipfile

import jax
import jax.numpy as jnp
import numpy as np
from scipy import linalg, special

from sara_jax.io.errors import InputError, MissingInput

POOL_DIM = 2048
SPATIAL_CHANNELS = 7  # ADM keeps only the first 7 channels of mixed_6/conv.
SPATIAL_SIZE = 17  # mixed_6/conv is 17x17 for the graph's 299x299 input.
SPATIAL_DIM = SPATIAL_SIZE * SPATIAL_SIZE * SPATIAL_CHANNELS  # 2023


@dataclasses.dataclass(frozen=True)
class FeatureStats:
    """Gaussian fit of a feature set: mu (D,) and sigma (D, D), float64."""

    mu: np.ndarray
    sigma: np.ndarray

    def __post_init__(self):
        mu = np.atleast_1d(np.asarray(self.mu, np.float64))
        sigma = np.atleast_2d(np.asarray(self.sigma, np.float64))
        if mu.ndim != 1 or sigma.shape != (mu.shape[0], mu.shape[0]):
            raise ValueError(
                f"FeatureStats expects mu (D,), sigma (D, D); got {mu.shape}, {sigma.shape}"
            )
        # Frozen dataclass: the normalised arrays go in through object.__setattr__.
        object.__setattr__(self, "mu", mu)
        object.__setattr__(self, "sigma", sigma)


def feature_stats(features: np.ndarray) -> FeatureStats:
    """Mean and unbiased covariance (np.cov, rowvar=False, as ADM) of features (N, D), N >= 2.

    ADM keeps mu in the features' float32; we take both in float64 (its reference stats are
    float64 too), which only changes FID in the last digits.
    """
    features = np.asarray(features, np.float64)
    if features.ndim != 2 or features.shape[0] < 2:
        raise ValueError(f"feature_stats expects features (N >= 2, D), got {features.shape}")
    return FeatureStats(features.mean(axis=0), np.cov(features, rowvar=False))


def frechet_distance(a: FeatureStats, b: FeatureStats, eps: float = 1e-6) -> float:
    """||mu_a - mu_b||^2 + tr(S_a) + tr(S_b) - 2 tr(sqrtm(S_a S_b)), as ADM (after TTUR).

    ADM calls it as sample.frechet_distance(reference); keep that order for bitwise-close numbers.
    When sqrtm of the product is not finite (a singular product), eps * I is added to both
    covariances and it is retried; a small imaginary part from round-off is dropped, a large one
    (|imag| > 1e-3 on the diagonal) is an error, as in ADM.
    """
    if a.mu.shape != b.mu.shape:
        raise ValueError(f"frechet_distance: feature dims differ, {a.mu.shape} vs {b.mu.shape}")
    diff = a.mu - b.mu
    covmean = linalg.sqrtm(a.sigma @ b.sigma)
    if not np.isfinite(covmean).all():
        warnings.warn(
            f"FID: singular covariance product; adding {eps} to the diagonals", stacklevel=2
        )
        offset = np.eye(a.sigma.shape[0]) * eps
        covmean = linalg.sqrtm((a.sigma + offset) @ (b.sigma + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"FID: sqrtm has imaginary part {np.max(np.abs(covmean.imag))}")
        covmean = covmean.real
    return float(diff @ diff + np.trace(a.sigma) + np.trace(b.sigma) - 2 * np.trace(covmean))


def _stats(x: FeatureStats | np.ndarray, dim: int, name: str) -> FeatureStats:
    stats = x if isinstance(x, FeatureStats) else feature_stats(x)
    if stats.mu.shape != (dim,):
        raise ValueError(f"{name} expects {dim}-dim features or stats, got {stats.mu.shape}")
    return stats


def fid(sample: FeatureStats | np.ndarray, ref: FeatureStats | np.ndarray) -> float:
    """FID: Frechet distance of pool3 features (N, 2048) or their stats, sample vs reference."""
    return frechet_distance(_stats(sample, POOL_DIM, "fid"), _stats(ref, POOL_DIM, "fid"))


def sfid(sample: FeatureStats | np.ndarray, ref: FeatureStats | np.ndarray) -> float:
    """sFID: Frechet distance of `spatial_features` (N, 2023) or their stats."""
    return frechet_distance(_stats(sample, SPATIAL_DIM, "sfid"), _stats(ref, SPATIAL_DIM, "sfid"))


def spatial_features(mixed_6_conv: np.ndarray) -> np.ndarray:
    """sFID features: (N, 17, 17, C) channels-last mixed_6/conv -> (N, 2023).

    ADM's TF graph is NHWC; it takes `[..., :7]` and reshapes to (N, -1) in C order, so the
    flat index is (h * 17 + w) * 7 + c (channel fastest), not the CHW order "7x17x17" suggests.
    The order must match the reference npz's mu_s/sigma_s, which were computed this way.
    Give NCHW outputs (e.g. a PyTorch port) a transpose to NHWC first.
    """
    x = np.asarray(mixed_6_conv)
    if x.ndim != 4 or x.shape[1:3] != (SPATIAL_SIZE, SPATIAL_SIZE) or x.shape[3] < SPATIAL_CHANNELS:
        raise ValueError(f"spatial_features expects (N, 17, 17, C >= 7) NHWC, got {x.shape}")
    return x[..., :SPATIAL_CHANNELS].reshape(x.shape[0], -1)


def inception_score_from_probs(probs: np.ndarray, split_size: int = 5000) -> float:
    """IS from class probabilities (N, K): mean over chunks of split_size rows of
    exp(mean_x KL(p(y|x) || p(y))), p(y) the chunk's mean prediction.

    As ADM (after improved-gan): consecutive chunks (10 for 50k samples, the last one partial if
    N is not a multiple), and only the mean over chunks is returned. Terms with p(y|x) = 0 count as
    0 (xlogy; ADM's formula would give NaN there, which its float32 softmax never hits in practice).
    """
    probs = np.asarray(probs, np.float64)
    if probs.ndim != 2:
        raise ValueError(f"inception_score expects (N, K) probabilities, got {probs.shape}")
    scores = []
    for i in range(0, len(probs), split_size):
        part = probs[i : i + split_size]
        marginal = part.mean(axis=0, keepdims=True)
        kl = np.sum(special.xlogy(part, part) - special.xlogy(part, marginal), axis=1)
        scores.append(np.exp(np.mean(kl)))
    return float(np.mean(scores))


def inception_score(logits: np.ndarray, split_size: int = 5000) -> float:
    """IS from logits (N, 1008): softmax, then `inception_score_from_probs`.

    ADM's logits are pool3 (N, 2048) @ the weight of the TF graph's `softmax/logits/MatMul`,
    without the bias that follows it in the graph, over all 1008 outputs (not 1000 classes).
    """
    logits = np.asarray(logits, np.float64)
    z = logits - logits.max(axis=-1, keepdims=True)
    probs = np.exp(z)
    return inception_score_from_probs(probs / probs.sum(axis=-1, keepdims=True), split_size)


@jax.jit
def _sq_distances(u: jax.Array, v: jax.Array) -> jax.Array:
    """Squared Euclidean distances (A, D), (B, D) -> (A, B), as ADM: |u|^2 - 2 u.v + |v|^2 >= 0."""
    uv = jnp.matmul(u, v.T, precision=jax.lax.Precision.HIGHEST)
    d = jnp.sum(u * u, axis=1)[:, None] - 2 * uv + jnp.sum(v * v, axis=1)[None, :]
    return jnp.maximum(d, 0.0)


@jax.jit
def _merge_smallest(running: jax.Array, u: jax.Array, v: jax.Array) -> jax.Array:
    """Keeps, per row of u, the running.shape[1] smallest distances seen so far (ascending)."""
    d = jnp.concatenate([running, _sq_distances(u, v)], axis=1)
    return -jax.lax.top_k(-d, running.shape[1])[0]


@jax.jit
def _in_manifolds(
    u: jax.Array, radii_u: jax.Array, v: jax.Array, radii_v: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """Which u lie in some v's ball (d <= radius_v), and which v in some u's ball. (A,), (B,)."""
    d = _sq_distances(u, v)
    return jnp.any(d <= radii_v[None, :], axis=1), jnp.any(d <= radii_u[:, None], axis=0)


def _batches(n: int, batch_size: int) -> list[slice]:
    return [slice(i, min(i + batch_size, n)) for i in range(0, n, batch_size)]


def manifold_radii(features: np.ndarray, k: int = 3, batch_size: int = 10000) -> np.ndarray:
    """Squared distance from each point (N, D) to its k-th nearest neighbour in the set -> (N,).

    That is the (k+1)-th smallest squared distance of the row, the point itself being the 0th
    (ADM partitions each row at index k). A running top-(k+1) over column blocks keeps memory
    at batch_size^2, where ADM holds a batch_size x N block.
    """
    features = jnp.asarray(features, jnp.float32)
    n = features.shape[0]
    if n <= k:
        raise ValueError(f"manifold_radii needs more than k={k} points, got {n}")
    radii = []
    for rows in _batches(n, batch_size):
        running = jnp.full((rows.stop - rows.start, k + 1), jnp.inf, jnp.float32)
        for cols in _batches(n, batch_size):
            running = _merge_smallest(running, features[rows], features[cols])
        radii.append(running[:, k])
    return np.asarray(jnp.concatenate(radii))


def precision_recall(
    real: np.ndarray, fake: np.ndarray, k: int = 3, batch_size: int = 10000
) -> tuple[float, float]:
    """Improved precision/recall (Kynkaanniemi et al. 2019) as ADM's ManifoldEstimator.

    Each set's manifold is the union of balls around its points with radius its k-NN distance.
    precision = fraction of fake (N2, D) inside the real manifold; recall = fraction of real
    (N1, D) inside the fake manifold. Squared distances are compared with squared radii, ball
    boundaries count as inside (<=), and no radius clamping (ADM's clamp_to_percentile=None).
    ADM first computes distances in float16 and falls back to float32 only on overflow; we use
    float32 throughout, which can only flip points lying within fp16 round-off of a boundary.
    """
    real = jnp.asarray(real, jnp.float32)
    fake = jnp.asarray(fake, jnp.float32)
    if real.ndim != 2 or fake.ndim != 2 or real.shape[1] != fake.shape[1]:
        raise ValueError(
            f"precision_recall expects (N1, D), (N2, D); got {real.shape}, {fake.shape}"
        )
    real_radii = jnp.asarray(manifold_radii(real, k, batch_size))
    fake_radii = jnp.asarray(manifold_radii(fake, k, batch_size))
    real_in = np.zeros(real.shape[0], bool)
    fake_in = np.zeros(fake.shape[0], bool)
    for r in _batches(real.shape[0], batch_size):
        for f in _batches(fake.shape[0], batch_size):
            r_in, f_in = _in_manifolds(real[r], real_radii[r], fake[f], fake_radii[f])
            real_in[r] |= np.asarray(r_in)
            fake_in[f] |= np.asarray(f_in)
    return float(fake_in.mean()), float(real_in.mean())


IMAGES = "uint8 images (N, H, W, 3) with values 0..255 in arr_0"


def read_npz(path: str, name: str, expected: str) -> dict[str, np.ndarray]:
    """Every array of the .npz at `path`, never unpickling. Errors start with `name` (the flag
    or field that gave `path`, or the path itself) and end with what was `expected`."""
    with open(path, "rb") as f:
        magic = f.read(6)
    if magic.startswith(b"\x93NUMPY"):
        raise InputError(f"{name} is a single .npy array, not an .npz archive; expected {expected}")
    if not magic.startswith(b"PK"):
        # numpy would call such a file a pickle and suggest unpickling it.
        raise InputError(f"{name} is not an .npz (zip) archive; expected {expected}")
    try:
        npz = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as err:
        raise InputError(f"{name} is truncated or damaged ({err}); expected {expected}") from err
    out = {}
    with npz:
        for key in npz.files:
            try:
                out[key] = npz[key]
            except ValueError as err:
                if "allow_pickle" not in str(err):
                    raise InputError(f"{name}: {key} cannot be read ({err})") from err
                # Unpickling would run code from the file, and objects are not images anyway.
                raise InputError(
                    f"{name}: {key} holds pickled Python objects, which are not loaded; "
                    f"expected {expected}"
                ) from err
            except (OSError, EOFError, zipfile.BadZipFile) as err:
                raise InputError(f"{name}: {key} cannot be read ({err})") from err
    return out


def check_images(arrays: dict[str, np.ndarray], name: str) -> np.ndarray:
    """`arrays["arr_0"]` if it is uint8 (N, H, W, 3); else an InputError starting with `name`
    that says what was found. Float images in [0, 1] or [-1, 1] are refused rather than
    featurised as if they were 0..255, which would give meaningless metrics."""
    if "arr_0" not in arrays:
        raise InputError(f"{name} has no arr_0 (it holds {sorted(arrays)}); expected {IMAGES}")
    images = arrays["arr_0"]
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise InputError(
            f"{name}: arr_0 is {images.dtype} {images.shape}; expected {IMAGES} "
            "(`python -m sara_jax.sample` writes them)"
        )
    return images


def load_reference(path: str) -> dict:
    """Reads a reference batch .npz (ADM's `VIRTUAL_imagenet256_labeled.npz` layout).

    Returns whichever of these the file holds:
      "fid":    FeatureStats from `mu`, `sigma` (pool3, 2048)
      "sfid":   FeatureStats from `mu_s`, `sigma_s` (spatial, 2023)
      "images": `arr_0`, uint8 (N, H, W, 3); ADM always recomputes reference pool features from
                these for precision/recall (and for FID/sFID when the stats are absent).
    Errors name the file and what was expected of it.
    """
    if not os.path.exists(path):
        raise MissingInput(f"reference batch not found: {path}")
    arrays = read_npz(path, path, f"FID stats ('mu', 'sigma') and/or {IMAGES}")
    out = {}
    stats = {"fid": ("mu", "sigma", POOL_DIM), "sfid": ("mu_s", "sigma_s", SPATIAL_DIM)}
    for name, (mu, sigma, dim) in stats.items():
        if mu in arrays and sigma in arrays:
            try:
                out[name] = FeatureStats(arrays[mu], arrays[sigma])
            except ValueError as err:
                raise InputError(f"{path}: {mu!r}/{sigma!r}: {err}") from err
            if out[name].mu.shape != (dim,):
                raise InputError(
                    f"{path}: {mu!r}/{sigma!r} are stats of {out[name].mu.shape[0]} features; "
                    f"{name} compares the Inception's {dim} (ADM's reference batches hold them)"
                )
        elif mu in arrays or sigma in arrays:
            raise InputError(f"{path}: has only one of {mu!r}/{sigma!r}; keys: {sorted(arrays)}")
    if "arr_0" in arrays:
        out["images"] = check_images(arrays, path)
    if "fid" not in out and "images" not in out:
        raise InputError(
            f"{path}: expected FID stats ('mu', 'sigma') or images ('arr_0'); "
            f"keys: {sorted(arrays)}"
        )
    return out
