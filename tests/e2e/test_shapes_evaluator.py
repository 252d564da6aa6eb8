"""The shapes evaluator: a classifier that shares nothing with the alignment target, its
Frechet distance and class accuracy, its keyed cache (rebuilt when damaged), and SIGTERM while
it trains."""

import logging

import jax
import ml_collections
import numpy as np
import pytest

from sara_jax.data.shapes import ShapesSource
from sara_jax.evaluation import metrics, shapes
from sara_jax.io import preemption


def evaluator_config(cache_dir, **overrides) -> ml_collections.ConfigDict:
    fields = {
        "width": 8,
        "steps": 150,
        "batch_size": 64,
        "lr": 3e-3,
        "num_train": 2048,
        "num_test": 512,
        "seed": 0,
        "cache_dir": str(cache_dir),
        **overrides,
    }
    return ml_collections.ConfigDict(fields)


DATA = ml_collections.ConfigDict(
    {"image_size": 32, "num_classes": 10, "num_examples": 20_000, "seed": 0}
)


@pytest.fixture(scope="module")
def evaluator(tmp_path_factory):
    return shapes.load_evaluator(evaluator_config(tmp_path_factory.mktemp("cache")), DATA)


@pytest.fixture(scope="module")
def real():
    """2000 training-distribution images (indices below data.num_examples) and labels."""
    source = ShapesSource(DATA.num_examples, DATA.image_size, DATA.num_classes, DATA.seed)
    records = [source[i] for i in range(2000)]
    return np.stack([r["image"] for r in records]), np.array([r["label"] for r in records])


def fd(featurize, a: np.ndarray, b: np.ndarray) -> float:
    stats = [metrics.feature_stats(featurize(x)["features"]) for x in (a, b)]
    return metrics.frechet_distance(*stats)


def test_the_evaluator_learns_from_records_no_run_reads():
    images, labels, test_images, _ = shapes.evaluator_records(
        evaluator_config("unused", num_train=3, num_test=2), DATA
    )
    beyond = ShapesSource(DATA.num_examples + 5, DATA.image_size, DATA.num_classes, DATA.seed)
    np.testing.assert_array_equal(images[0], beyond[DATA.num_examples]["image"])
    np.testing.assert_array_equal(test_images[-1], beyond[DATA.num_examples + 4]["image"])
    assert labels.tolist() == [i % 10 for i in range(DATA.num_examples, DATA.num_examples + 3)]


def test_real_images_are_classified_and_noise_is_at_chance(evaluator, real):
    images, labels = real
    assert evaluator.accuracy >= 0.98  # Held out from its own training records.
    assert shapes.class_accuracy(evaluator.featurize(images)["logits"], labels) >= 0.98
    noise = np.random.default_rng(0).integers(0, 256, images.shape, dtype=np.uint8)
    noise_acc = shapes.class_accuracy(evaluator.featurize(noise)["logits"], labels)
    assert noise_acc <= 0.3  # Chance is 0.1; noise is one wrong class or a few.


def test_fd_of_real_images_is_near_its_floor_and_wrong_sets_are_far_above(evaluator, real):
    images, labels = real
    floor = fd(evaluator.featurize, images[:1000], images[1000:])
    one_class = np.concatenate([images[labels == 0]] * 5)[:1000]
    wrong_classes = fd(evaluator.featurize, one_class, images[1000:])
    noise = np.random.default_rng(1).integers(0, 256, (1000, 32, 32, 3), dtype=np.uint8)
    noisy = fd(evaluator.featurize, noise, images[1000:])
    assert floor < 0.05 * wrong_classes and floor < 0.05 * noisy, (floor, wrong_classes, noisy)


def test_the_cache_is_reused_for_the_same_config_and_retrains_for_another(tmp_path, monkeypatch):
    trained = []

    def fake_train(cfg, data):
        trained.append(cfg.steps)
        template = shapes.ShapesClassifier(data.num_classes, cfg.width)
        params = template.init(jax.random.key(0), np.zeros((1, 32, 32, 3), np.uint8))["params"]
        return params, 0.5 + cfg.steps / 1000

    monkeypatch.setattr(shapes, "train_evaluator", fake_train)
    config = evaluator_config(tmp_path)
    first = shapes.load_evaluator(config, DATA)
    again = shapes.load_evaluator(evaluator_config(tmp_path), DATA)
    assert trained == [150] and again.accuracy == first.accuracy == 0.65
    shapes.load_evaluator(evaluator_config(tmp_path, steps=7), DATA)
    assert trained == [150, 7]
    other_data = DATA.copy_and_resolve_references()
    other_data.seed = 1
    shapes.load_evaluator(config, other_data)
    assert trained == [150, 7, 150]
    assert len(list(tmp_path.glob("shapes_evaluator-*.msgpack"))) == 3


def quick_config(cache_dir) -> ml_collections.ConfigDict:
    """A few steps on a few records: seconds, and as determined by its config as any."""
    return evaluator_config(cache_dir, steps=3, num_train=64, num_test=32, batch_size=32)


def test_a_truncated_cache_is_named_and_retrained_as_it_was(tmp_path, caplog):
    config = quick_config(tmp_path)
    first = shapes.load_evaluator(config, DATA)
    path = shapes.cache_path(config, DATA)
    good = path.read_bytes()
    path.write_bytes(good[: len(good) // 2])  # As a copy cut short would leave it.
    with caplog.at_level(logging.WARNING):
        again = shapes.load_evaluator(config, DATA)
    assert f"shapes evaluator: the cache {path} cannot be used (Unpack failed" in caplog.text
    assert "rebuilding it and overwriting the file" in caplog.text
    assert path.read_bytes() == good and again.accuracy == first.accuracy
    images = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    for key, value in first.featurize(images).items():
        np.testing.assert_array_equal(again.featurize(images)[key], value)


def test_sigterm_stops_the_training_at_a_step_boundary_and_caches_nothing(tmp_path, monkeypatch):
    asked = []

    def requested() -> bool:  # SIGTERM arrives during the second of the three steps.
        asked.append(1)
        return len(asked) == 3

    monkeypatch.setattr(preemption, "requested", requested)
    with pytest.raises(preemption.Preempted, match="shapes evaluator stopped at step 2/3; "):
        shapes.load_evaluator(quick_config(tmp_path / "cache"), DATA)
    assert not (tmp_path / "cache").exists()
