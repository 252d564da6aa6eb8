"""sara_jax.evaluate: the featuriser's outputs, and the metrics of a set against itself."""

import jax
import numpy as np
import pytest
from helpers import fake_featurize, symmetric_sqrtm

from sara_jax import evaluate
from sara_jax.evaluation import inception, metrics
from sara_jax.models.inception import FIDInceptionV3


def random_variables(model: FIDInceptionV3):
    """Random params and BatchNorm statistics, filled by numpy (no init compile)."""
    shapes = jax.eval_shape(model.init, jax.random.key(0), np.zeros((1, 299, 299, 3)))
    rng = np.random.default_rng(0)

    def fill(path, leaf):
        name = path[-1].key
        if name == "var":
            return rng.uniform(0.5, 1.5, leaf.shape).astype(np.float32)
        scale = 0.05 if name == "kernel" else 0.1
        return (scale * rng.standard_normal(leaf.shape)).astype(np.float32)

    return jax.tree_util.tree_map_with_path(fill, shapes)


def test_featurizer_gives_pool3_bias_free_logits_and_spatial_features():
    model = FIDInceptionV3()
    variables = random_variables(model)
    featurize = inception.make_featurizer(model, variables, batch_size=8)
    images = np.random.default_rng(1).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    out = featurize(images)
    assert out["pool3"].shape == (3, 2048) and out["spatial"].shape == (3, 7 * 17 * 17)
    kernel = np.asarray(variables["params"]["fc"]["kernel"], np.float64)
    np.testing.assert_allclose(out["logits"], out["pool3"] @ kernel, rtol=1e-4, atol=1e-5)
    # Padding the last batch does not change a sample's features.
    np.testing.assert_allclose(featurize(images[:1])["pool3"], out["pool3"][:1], rtol=1e-5)


def test_a_set_against_itself(monkeypatch):
    monkeypatch.setattr(metrics.linalg, "sqrtm", symmetric_sqrtm)
    images = np.random.default_rng(2).integers(0, 256, (40, 4, 4, 3), dtype=np.uint8)
    results = evaluate.evaluate(images, {"images": images}, fake_featurize, split_size=10)
    features = fake_featurize(images)
    # ~0 up to the rounding of traces this large (FID sums |mu|^2-scale terms).
    scale = np.trace(metrics.feature_stats(features["pool3"]).sigma)
    assert abs(results["fid"]) < 1e-6 * scale and abs(results["sfid"]) < 1e-6 * scale
    assert results["precision"] == 1.0 and results["recall"] == 1.0
    assert results["inception_score"] >= 1.0 and results["num_samples"] == 40

    other = np.random.default_rng(3).integers(0, 128, (40, 4, 4, 3), dtype=np.uint8)
    results = evaluate.evaluate(other, {"images": images}, fake_featurize, split_size=10)
    assert results["fid"] > 1e-2 * scale

    # Stored statistics replace the reference images; no images: no precision/recall.
    stats = {
        "fid": metrics.feature_stats(features["pool3"]),
        "sfid": metrics.feature_stats(features["spatial"]),
    }
    results = evaluate.evaluate(images, stats, fake_featurize, split_size=10)
    assert abs(results["fid"]) < 1e-6 * scale and results["precision"] is None

    with pytest.raises(ValueError, match="neither both statistics nor images"):
        evaluate.evaluate(images, {"fid": stats["fid"]}, fake_featurize)
