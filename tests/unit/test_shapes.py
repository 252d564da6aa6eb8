"""Tests for sara_jax.data.shapes: the procedurally generated demo data set."""

import pickle
import time

import numpy as np
import pytest

from sara_jax.data.shapes import CLASS_NAMES, ShapesSource


def _images_and_labels(source: ShapesSource) -> tuple[np.ndarray, np.ndarray]:
    """All records of a source: images uint8 (N, S, S, 3), labels int32 (N,)."""
    records = [source[i] for i in range(len(source))]
    return np.stack([r["image"] for r in records]), np.stack([r["label"] for r in records])


@pytest.mark.parametrize("image_size", [8, 32, 64])
def test_record_format(image_size):
    record = ShapesSource(20, image_size=image_size)[7]
    assert set(record) == {"image", "label"}
    assert record["image"].shape == (image_size, image_size, 3)
    assert record["image"].dtype == np.uint8
    assert np.shape(record["label"]) == ()
    assert record["label"].dtype == np.int32


def test_len_and_index_range():
    source = ShapesSource(5)
    assert len(source) == 5
    with pytest.raises(IndexError):
        source[5]
    with pytest.raises(IndexError):
        source[-1]


def test_records_are_a_pure_function_of_seed_and_index():
    a, b = ShapesSource(50, seed=3), ShapesSource(50, seed=3)
    for i in (0, 17, 49):
        np.testing.assert_array_equal(a[i]["image"], b[i]["image"])
        np.testing.assert_array_equal(a[i]["image"], a[i]["image"])
        assert a[i]["label"] == b[i]["label"]
    # Reading out of order gives the same record as reading in order.
    np.testing.assert_array_equal(a[17]["image"], ShapesSource(50, seed=3)[17]["image"])


def test_seeds_and_indices_give_different_images():
    images_0, labels_0 = _images_and_labels(ShapesSource(30, seed=0))
    images_1, labels_1 = _images_and_labels(ShapesSource(30, seed=1))
    np.testing.assert_array_equal(labels_0, labels_1)
    assert all(not np.array_equal(x, y) for x, y in zip(images_0, images_1, strict=True))
    flat = images_0.reshape(len(images_0), -1)
    assert len(np.unique(flat, axis=0)) == len(flat)


def test_pickled_source_renders_the_same_records():
    # grain's worker processes receive the source by pickling.
    source = ShapesSource(10, image_size=16, num_classes=4, seed=9)
    clone = pickle.loads(pickle.dumps(source))
    np.testing.assert_array_equal(clone[3]["image"], source[3]["image"])
    assert repr(clone) == repr(source)


@pytest.mark.parametrize("num_classes", [1, 3, 10])
def test_labels_are_balanced(num_classes):
    _, labels = _images_and_labels(ShapesSource(103, image_size=8, num_classes=num_classes))
    counts = np.bincount(labels, minlength=num_classes)
    assert len(counts) == num_classes
    assert counts.max() - counts.min() <= 1


@pytest.mark.parametrize("image_size", [8, 16, 32])
def test_every_image_shows_a_shape(image_size):
    images, _ = _images_and_labels(ShapesSource(100, image_size=image_size))
    for image in images:
        # The shape's colour stands well apart from every background colour.
        colours = np.unique(image.reshape(-1, 3), axis=0).astype(np.float32)
        assert np.linalg.norm(colours[:, None] - colours[None], axis=-1).max() > 80


def test_classes_are_learnable_by_a_linear_probe():
    """A softmax classifier on raw pixels, fit on one seed, labels another seed's images."""
    train_images, train_labels = _images_and_labels(ShapesSource(600, image_size=16, seed=0))
    test_images, test_labels = _images_and_labels(ShapesSource(200, image_size=16, seed=1))
    x = train_images.reshape(len(train_images), -1).astype(np.float32) / 255
    x_test = test_images.reshape(len(test_images), -1).astype(np.float32) / 255
    mean = x.mean(0)
    x, x_test = x - mean, x_test - mean
    one_hot = np.eye(10, dtype=np.float32)[train_labels]
    w = np.zeros((x.shape[1], 10), np.float32)
    b = np.zeros(10, np.float32)
    for _ in range(200):
        logits = x @ w + b
        p = np.exp(logits - logits.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        g = (p - one_hot) / len(x)
        w -= 0.5 * x.T @ g
        b -= 0.5 * g.sum(0)
    accuracy = np.mean((x_test @ w + b).argmax(1) == test_labels)
    assert accuracy > 0.85


def test_class_means_are_distinct():
    images, labels = _images_and_labels(ShapesSource(400, image_size=16))
    means = np.stack([images[labels == c].mean(0) for c in range(10)]).reshape(10, -1)
    distances = np.linalg.norm(means[:, None] - means[None], axis=-1)
    off_diagonal = distances[~np.eye(10, dtype=bool)]
    # Per-pixel RMS difference between any two class means is at least ~10 grey levels.
    assert off_diagonal.min() / np.sqrt(means.shape[1]) > 10


def test_fewer_classes_use_a_prefix_of_the_class_list():
    images_3, labels_3 = _images_and_labels(ShapesSource(9, image_size=16, num_classes=3))
    images_10, _ = _images_and_labels(ShapesSource(30, image_size=16, num_classes=10))
    assert set(labels_3.tolist()) == {0, 1, 2}
    # Rendering depends only on (seed, index, label), so a record of class 0 is the same either way.
    np.testing.assert_array_equal(images_3[0], images_10[0])


def test_class_names():
    assert len(CLASS_NAMES) >= 10
    assert len(set(CLASS_NAMES)) == len(CLASS_NAMES)


def test_rendering_is_fast():
    source = ShapesSource(200)
    start = time.perf_counter()
    for i in range(len(source)):
        source[i]
    per_image = (time.perf_counter() - start) / len(source)
    # Typically ~0.1 ms; the bound leaves room for a loaded machine.
    assert per_image < 5e-3


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"num_examples": 0}, "num_examples"),
        ({"num_examples": 10, "image_size": 7}, "image_size"),
        ({"num_examples": 10, "num_classes": len(CLASS_NAMES) + 1}, "num_classes"),
        ({"num_examples": 10, "num_classes": 0}, "num_classes"),
    ],
)
def test_invalid_arguments_name_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        ShapesSource(**kwargs)
