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


def test_a_set_against_itself(monkeypatch, tmp_path):
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

    # The statistics a reference gave, written once, score another set as its images did.
    saved = tmp_path / "reference.npz"
    from_images = evaluate.evaluate(other, {"images": images}, fake_featurize, 10, saved)
    from_file = evaluate.evaluate(other, metrics.load_reference(str(saved)), fake_featurize, 10)
    assert from_file["fid"] == from_images["fid"] and from_file["sfid"] == from_images["sfid"]
    assert from_file["precision"] is None

    with pytest.raises(ValueError, match="neither both statistics nor images"):
        evaluate.evaluate(images, {"fid": stats["fid"]}, fake_featurize)


IMAGES = np.zeros((4, 8, 8, 3), np.uint8)
BAD_NPZ = {
    "pickled": (
        {"arr_0": np.array([IMAGES, IMAGES[:2]], dtype=object)},
        "arr_0 holds pickled Python objects, which are not loaded",
    ),
    "float": (
        {"arr_0": np.full((4, 8, 8, 3), 0.5, np.float32)},
        r"arr_0 is float32 \(4, 8, 8, 3\)",
    ),
    "shape": ({"arr_0": IMAGES[..., 0]}, r"arr_0 is uint8 \(4, 8, 8\)"),
    "no_arr_0": ({"images": IMAGES}, r"has no arr_0 \(it holds \['images'\]\)"),
}
EXPECTED = r"uint8 images \(N, H, W, 3\) with values 0\.\.255 in arr_0"


@pytest.mark.parametrize("kind", BAD_NPZ)
def test_bad_samples_npz_is_refused_naming_the_file(tmp_path, kind):
    arrays, found = BAD_NPZ[kind]
    path = tmp_path / f"{kind}.npz"
    np.savez(path, **arrays)
    with pytest.raises(ValueError, match=rf"--samples={path}.*{found}.*expected {EXPECTED}"):
        evaluate.load_samples(str(path))
    np.savez(path, arr_0=IMAGES, arr_1=np.zeros(4, np.int32))
    np.testing.assert_array_equal(evaluate.load_samples(str(path)), IMAGES)


@pytest.mark.parametrize("kind", ["pickled", "float", "shape"])
def test_bad_reference_images_are_refused_naming_the_file(tmp_path, kind):
    arrays, found = BAD_NPZ[kind]
    path = tmp_path / f"{kind}.npz"
    np.savez(path, **arrays)
    with pytest.raises(ValueError, match=rf"{path}: {found}.*{EXPECTED}"):
        metrics.load_reference(str(path))


def test_files_that_are_no_npz_are_named(tmp_path):
    np.save(tmp_path / "one.npy", IMAGES)
    (tmp_path / "text.npz").write_text("not an archive")
    np.savez(tmp_path / "full.npz", arr_0=IMAGES)
    data = (tmp_path / "full.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(data[: len(data) // 2])
    for name, problem in [
        ("one.npy", "is a single .npy array, not an .npz archive"),
        ("text.npz", r"is not an .npz \(zip\) archive"),
        ("cut.npz", "is truncated or damaged"),
    ]:
        path = tmp_path / name
        with pytest.raises(ValueError, match=rf"--samples={path} {problem}.*; expected {EXPECTED}"):
            evaluate.load_samples(str(path))
        with pytest.raises(ValueError, match=rf"{path} {problem}.*; expected FID stats"):
            metrics.load_reference(str(path))
