"""ADM evaluator metrics against cases with a known answer."""

import numpy as np
import pytest
from scipy.spatial.distance import cdist

from sara_jax.evaluation import metrics
from sara_jax.evaluation.metrics import FeatureStats


def _random_spd(rng: np.random.Generator, d: int) -> np.ndarray:
    a = rng.normal(size=(d, d))
    return a @ a.T / d + 0.1 * np.eye(d)


def test_frechet_distance_diagonal_closed_form():
    rng = np.random.default_rng(0)
    mu1, mu2 = rng.normal(size=16), rng.normal(size=16)
    s1, s2 = rng.uniform(0.1, 3.0, 16), rng.uniform(0.1, 3.0, 16)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum(s1 + s2 - 2 * np.sqrt(s1 * s2))
    got = metrics.frechet_distance(FeatureStats(mu1, np.diag(s1)), FeatureStats(mu2, np.diag(s2)))
    assert got == pytest.approx(expected, rel=1e-9)


def test_frechet_distance_scaled_full_covariance():
    # S2 = c^2 S1 commutes with S1, so tr sqrtm(S1 S2) = c tr S1.
    rng = np.random.default_rng(1)
    s1 = _random_spd(rng, 32)
    mu1, mu2 = rng.normal(size=32), rng.normal(size=32)
    c = 1.7
    expected = np.sum((mu1 - mu2) ** 2) + (1 - c) ** 2 * np.trace(s1)
    got = metrics.frechet_distance(FeatureStats(mu1, s1), FeatureStats(mu2, c * c * s1))
    assert got == pytest.approx(expected, rel=1e-8)


def test_frechet_distance_of_identical_features_is_zero():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(1000, 64)) @ rng.normal(size=(64, 64)) + 3.0
    stats = metrics.feature_stats(x)
    assert metrics.frechet_distance(stats, stats) == pytest.approx(0.0, abs=1e-6)


def _diagonal_sqrtm(a: np.ndarray) -> np.ndarray:
    # scipy's sqrtm takes 10-30 s at 2048 dims; diagonal products keep fid/sfid tests fast.
    assert np.abs(a - np.diag(np.diagonal(a))).max() <= 1e-12 * np.abs(a).max()
    return np.diag(np.sqrt(np.diagonal(a)))


@pytest.mark.parametrize(("metric", "dim"), [(metrics.fid, 2048), (metrics.sfid, 2023)])
def test_fid_sfid_from_features_or_stats(monkeypatch, metric, dim):
    monkeypatch.setattr(metrics.linalg, "sqrtm", _diagonal_sqrtm)
    rng = np.random.default_rng(3)
    # Rows m +- s_j e_j: mean m, covariance exactly diag(2 s^2 / (2 dim - 1)).
    m, s = rng.normal(size=dim), rng.uniform(1.0, 2.0, dim)
    x = m + np.concatenate([np.diag(s), -np.diag(s)])
    var_x = 2 * s**2 / (2 * dim - 1)
    mu_r, var_r = rng.normal(size=dim), rng.uniform(0.1, 2.0, dim)
    ref = FeatureStats(mu_r, np.diag(var_r))
    expected = np.sum((m - mu_r) ** 2) + np.sum(var_x + var_r - 2 * np.sqrt(var_x * var_r))
    assert metric(x, ref) == pytest.approx(expected, rel=1e-9)
    assert metric(metrics.feature_stats(x), ref) == pytest.approx(expected, rel=1e-9)
    assert metric(x, x) == pytest.approx(0.0, abs=1e-9)
    with pytest.raises(ValueError, match=str(dim)):
        metric(x[:, :100], x[:, :100])


def test_feature_stats_is_mean_and_unbiased_cov():
    x = np.array([[0.0, 1.0], [2.0, 1.0], [4.0, 4.0]], np.float32)
    stats = metrics.feature_stats(x)
    assert stats.mu.dtype == np.float64 and stats.sigma.dtype == np.float64
    np.testing.assert_allclose(stats.mu, [2.0, 2.0])
    np.testing.assert_allclose(stats.sigma, [[4.0, 3.0], [3.0, 3.0]])  # divides by N - 1.


def test_frechet_distance_retries_with_eps_when_sqrtm_not_finite(monkeypatch):
    real_sqrtm = metrics.linalg.sqrtm
    calls = []

    def flaky_sqrtm(a):
        calls.append(a)
        return np.full_like(a, np.nan) if len(calls) == 1 else real_sqrtm(a)

    monkeypatch.setattr(metrics.linalg, "sqrtm", flaky_sqrtm)
    s = FeatureStats(np.zeros(3), np.diag([1.0, 2.0, 3.0]))
    with pytest.warns(UserWarning, match="singular"):
        got = metrics.frechet_distance(s, s, eps=1e-3)
    np.testing.assert_allclose(calls[1], (s.sigma + 1e-3 * np.eye(3)) ** 2)
    # tr(S) + tr(S) - 2 tr(S + eps I) = -2 * 3 * eps.
    assert got == pytest.approx(-6e-3, rel=1e-9)


def test_spatial_features_keeps_adm_nhwc_order():
    n, c = 2, 9
    x = np.arange(n * 17 * 17 * c).reshape(n, 17, 17, c)
    out = metrics.spatial_features(x)
    assert out.shape == (n, 2023)
    # Channel is the fastest index: flat = (h * 17 + w) * 7 + ch.
    assert out[0, :8].tolist() == [0, 1, 2, 3, 4, 5, 6, 9]
    for b, h, w, ch in [(0, 0, 0, 6), (1, 3, 16, 2), (1, 16, 16, 6)]:
        assert out[b, (h * 17 + w) * 7 + ch] == x[b, h, w, ch]
    with pytest.raises(ValueError, match="NHWC"):
        metrics.spatial_features(np.zeros((2, 192, 17, 17)))  # NCHW by mistake.


def test_inception_score_uniform_is_one():
    assert metrics.inception_score_from_probs(np.full((100, 10), 0.1)) == pytest.approx(1.0)
    assert metrics.inception_score(np.zeros((100, 1008))) == pytest.approx(1.0)


def test_inception_score_one_hot_over_k_classes_is_k():
    k = 7
    probs = np.eye(k)[np.arange(70) % k]
    assert metrics.inception_score_from_probs(probs) == pytest.approx(k)
    # Confident logits give nearly one-hot softmax outputs.
    assert metrics.inception_score(50.0 * probs) == pytest.approx(k, rel=1e-12)


def test_inception_score_averages_over_splits():
    # First split: one-hot over 5 classes (IS 5); second: all the same class (IS 1).
    probs = np.concatenate([np.eye(5), np.tile(np.eye(5)[:1], (5, 1))])
    assert metrics.inception_score_from_probs(probs, split_size=5) == pytest.approx(3.0)
    # Pooled instead, the answer differs, so the split matters.
    assert metrics.inception_score_from_probs(probs, split_size=10) != pytest.approx(3.0)


def test_inception_score_is_exp_mutual_information():
    rng = np.random.default_rng(4)
    probs = rng.dirichlet(np.full(20, 0.3), size=500)

    def entropy(p):
        return -np.sum(p * np.log(p), axis=-1)

    expected = np.exp(entropy(probs.mean(axis=0)) - entropy(probs).mean())
    assert metrics.inception_score_from_probs(probs) == pytest.approx(expected, rel=1e-10)


def _on_a_line(xs, d: int = 8) -> np.ndarray:
    """Points x * e_0 in R^d: distances are exact in float32."""
    out = np.zeros((len(xs), d), np.float32)
    out[:, 0] = xs
    return out


def test_manifold_radii_is_kth_neighbour_excluding_self():
    real = _on_a_line(range(10))
    # k=3: point 0's neighbours are 1, 2, 3 -> squared radius 9; point 5's are 4, 6, then 3 or 7.
    radii = metrics.manifold_radii(real, k=3, batch_size=4)
    np.testing.assert_array_equal(radii, [9, 4, 4, 4, 4, 4, 4, 4, 4, 9])


def test_precision_recall_identical_sets():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(50, 16))
    assert metrics.precision_recall(x, x, batch_size=16) == (1.0, 1.0)


def test_precision_zero_when_fake_far_away():
    rng = np.random.default_rng(6)
    real = rng.normal(size=(40, 16))
    precision, recall = metrics.precision_recall(real, real + 100.0)
    assert (precision, recall) == (0.0, 0.0)


def test_precision_uses_squared_radii_and_inclusive_boundary():
    real = _on_a_line(range(10))  # squared radius of 9 is 9, of 8 is 4.
    # 11: d^2 = 4 to 9 -> in; 12: d^2 = 9 to 9, on the boundary -> in;
    # 12.5: d^2 = 12.25 to 9, 20.25 to 8 -> out; 5 -> in; 40 -> out.
    fake = _on_a_line([11, 12, 12.5, 5, 40])
    precision, _ = metrics.precision_recall(real, fake, k=3, batch_size=3)
    assert precision == pytest.approx(3 / 5)


def test_recall_when_fake_covers_part_of_real():
    real = _on_a_line(range(10))
    fake = _on_a_line(range(5))
    # Fake radii (k=3): 0 -> 3, 1, 2, 3 -> 2, 4 -> 3; the balls reach up to 4 + 3 = 7, so real
    # 0..7 are covered and 8, 9 are not. Every fake is a real point: precision 1.
    assert metrics.precision_recall(real, fake, k=3, batch_size=4) == (1.0, 0.8)


def test_precision_recall_matches_brute_force_with_batches():
    rng = np.random.default_rng(7)
    real = rng.normal(size=(37, 5)).astype(np.float32)
    fake = (rng.normal(size=(23, 5)) * 0.7 + 0.5).astype(np.float32)
    k = 3

    def radii(x):
        return np.sort(cdist(x, x, "sqeuclidean"), axis=1)[:, k]

    d = cdist(real, fake, "sqeuclidean")
    expected_precision = np.mean(np.any(d <= radii(real)[:, None], axis=0))
    expected_recall = np.mean(np.any(d <= radii(fake)[None, :], axis=1))
    assert 0.0 < expected_precision < 1.0 and 0.0 < expected_recall < 1.0
    got = metrics.precision_recall(real, fake, k=k, batch_size=6)
    assert got == pytest.approx((expected_precision, expected_recall))
    assert metrics.precision_recall(real, fake, k=k, batch_size=1000) == got


def test_load_reference_adm_layout(tmp_path):
    rng = np.random.default_rng(8)
    path = tmp_path / "VIRTUAL_ref.npz"
    images = rng.integers(0, 256, size=(4, 8, 8, 3), dtype=np.uint8)
    mu, sigma = rng.normal(size=2048), np.diag(rng.uniform(1, 2, 2048))
    mu_s, sigma_s = rng.normal(size=2023), np.diag(rng.uniform(1, 2, 2023))
    np.savez(path, arr_0=images, mu=mu, sigma=sigma, mu_s=mu_s, sigma_s=sigma_s)
    ref = metrics.load_reference(str(path))
    assert set(ref) == {"fid", "sfid", "images"}
    np.testing.assert_array_equal(ref["images"], images)
    np.testing.assert_array_equal(ref["fid"].mu, mu)
    np.testing.assert_array_equal(ref["fid"].sigma, sigma)
    np.testing.assert_array_equal(ref["sfid"].mu, mu_s)
    np.testing.assert_array_equal(ref["sfid"].sigma, sigma_s)


def test_load_reference_images_only(tmp_path):
    path = tmp_path / "images.npz"
    np.savez(path, np.zeros((2, 4, 4, 3), np.uint8))
    assert set(metrics.load_reference(str(path))) == {"images"}


def test_load_reference_errors_name_file_and_keys(tmp_path):
    path = tmp_path / "bad.npz"
    np.savez(path, features=np.zeros(3), labels=np.zeros(3))
    with pytest.raises(ValueError, match=r"bad\.npz.*\['features', 'labels'\]"):
        metrics.load_reference(str(path))
    half = tmp_path / "half.npz"
    np.savez(half, arr_0=np.zeros((1, 2, 2, 3)), mu=np.zeros(3))
    with pytest.raises(ValueError, match="sigma"):
        metrics.load_reference(str(half))
    small = tmp_path / "small.npz"
    np.savez(small, mu=np.zeros(3), sigma=np.eye(3))
    with pytest.raises(ValueError, match=r"small\.npz: 'mu'/'sigma' are stats of 3 .* 2048"):
        metrics.load_reference(str(small))
    with pytest.raises(FileNotFoundError, match="missing.npz"):
        metrics.load_reference(str(tmp_path / "missing.npz"))
