"""The shapes evaluator's scores and their standard errors (evaluation.shapes.scores)."""

import numpy as np

from sara_jax.evaluation import metrics, shapes


def features_of(n: int, seed: int) -> dict[str, np.ndarray]:
    """Samples' features off the reference's distribution (mean 0.5, scale 1.5: fd ~ 4), as
    a model's are while it trains. Near fd 0, where fd is quadratic in the sample's moments,
    the bootstrap overstates the spread (a known limit of it); the study's fd are far above."""
    rng = np.random.default_rng(seed)
    return {"features": 0.5 + 1.5 * rng.normal(size=(n, 8)), "logits": rng.normal(size=(n, 3))}


def test_class_acc_and_its_binomial_standard_error():
    logits = np.eye(3)[[0, 1, 2, 0]]  # Predicts 0, 1, 2, 0.
    labels = np.array([0, 1, 2, 1])  # The last is wrong: 3 of 4.
    reference = metrics.feature_stats(np.random.default_rng(1).normal(size=(100, 8)))
    features = {"features": np.random.default_rng(2).normal(size=(4, 8)), "logits": logits}
    got = shapes.scores(features, labels, reference)
    assert got["class_acc"] == 0.75
    np.testing.assert_allclose(got["class_acc_se"], np.sqrt(0.75 * 0.25 / 4))


def test_fd_standard_error_is_reproducible_and_shrinks_with_more_samples():
    reference = metrics.feature_stats(np.random.default_rng(0).normal(size=(5000, 8)))
    labels = lambda n: np.zeros(n, np.int64)  # noqa: E731
    small = shapes.scores(features_of(200, 1), labels(200), reference)
    assert small == shapes.scores(features_of(200, 1), labels(200), reference)
    large = shapes.scores(features_of(5000, 1), labels(5000), reference)
    # sqrt(25) = 5 times more samples: the spread of fd over draws falls roughly 5-fold.
    assert 0 < large["fd_se"] < small["fd_se"] / 2.5
    # And it is the spread of fd over independent draws, to within the bootstrap's accuracy.
    draws = [
        shapes.scores(features_of(200, seed), labels(200), reference)["fd"] for seed in range(2, 42)
    ]
    assert 0.5 < small["fd_se"] / np.std(draws, ddof=1) < 2
