"""An evaluator of generated shapes that shares nothing with the alignment target.

A small convolutional classifier (no attention, no patch tokens, not the demo encoder's ViT)
learns the shape classes from generator records that no training run reads: indices from
`data.num_examples` on, which the SiT's source never reaches. Its penultimate features give a
Frechet distance (`fd`, the FID formula in this feature space) between samples and real
images, and its predictions give `class_acc`, the fraction of class-k samples it calls k.
The weights are cached keyed by everything that determines them, as the demo encoder's are,
and the demo's and the study's ship with the code (`io.instruments`): a study's ruler is the
same file on every machine.
"""

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from sara_jax.data.shapes import ShapesSource
from sara_jax.encoders.pretrain import classifier_accuracy, fit_classifier
from sara_jax.evaluation import metrics
from sara_jax.io import instruments

PyTree = Any
# uint8 images (N, H, W, 3) -> {"features": (N, F), "logits": (N, classes)} numpy arrays.
Featurize = Callable[[np.ndarray], dict[str, np.ndarray]]


class ShapesClassifier(nn.Module):
    """Three stages of two 3x3 convolutions (GroupNorm, ReLU), widths w, 2w, 4w, the last two
    starting with stride 2; global average pool -> features (B, 4w) -> linear logits."""

    num_classes: int
    width: int

    @nn.compact
    def __call__(self, images: jax.Array) -> tuple[jax.Array, jax.Array]:
        """images: uint8 (B, H, W, 3) -> features (B, 4 width), logits (B, num_classes)."""
        x = images.astype(jnp.float32) / 127.5 - 1.0
        for stage, channels in enumerate((self.width, 2 * self.width, 4 * self.width)):
            for conv in range(2):
                stride = 2 if stage > 0 and conv == 0 else 1
                x = nn.Conv(channels, (3, 3), strides=stride)(x)
                x = nn.relu(nn.GroupNorm(num_groups=8)(x))
        features = x.mean(axis=(1, 2))
        return features, nn.Dense(self.num_classes)(features)


class ShapesEvaluator(NamedTuple):
    """featurize: see `Featurize`; accuracy: held-out accuracy on real images (its ceiling)."""

    featurize: Featurize
    accuracy: float


def evaluator_records(
    shapes: ml_collections.ConfigDict, data: ml_collections.ConfigDict
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(train images, train labels, held-out images, held-out labels): generator records
    `data.num_examples` onwards, which the training source (indices below it) never reads."""
    first = data.num_examples
    end = first + shapes.num_train + shapes.num_test
    source = ShapesSource(end, data.image_size, data.num_classes, data.seed)
    records = [source[i] for i in range(first, end)]
    images = np.stack([r["image"] for r in records])
    labels = np.array([r["label"] for r in records])
    n = shapes.num_train
    return images[:n], labels[:n], images[n:], labels[n:]


def cache_path(shapes: ml_collections.ConfigDict, data: ml_collections.ConfigDict) -> Path:
    """A file name that changes whenever anything that determines the weights changes."""
    key = {
        "evaluator": {k: v for k, v in shapes.items() if k != "cache_dir"},
        "data": {k: data[k] for k in ("image_size", "num_classes", "num_examples", "seed")},
    }
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return Path(shapes.cache_dir).expanduser() / f"shapes_evaluator-{digest}.msgpack"


def train_evaluator(
    shapes: ml_collections.ConfigDict, data: ml_collections.ConfigDict
) -> tuple[PyTree, float]:
    """Trains the classifier on `shapes.num_train` records; returns its params and its accuracy
    on the `shapes.num_test` records after them."""
    images, labels, test_images, test_labels = evaluator_records(shapes, data)
    model = ShapesClassifier(data.num_classes, shapes.width)
    params = model.init(jax.random.key(shapes.seed), jnp.asarray(images[:1]))["params"]

    def logits_fn(params: PyTree, images: jax.Array) -> jax.Array:
        return model.apply({"params": params}, images)[1]

    params = fit_classifier(
        logits_fn,
        params,
        images,
        labels,
        steps=shapes.steps,
        batch_size=shapes.batch_size,
        lr=shapes.lr,
        seed=shapes.seed,
        name="shapes evaluator",
    )
    accuracy = classifier_accuracy(logits_fn, params, test_images, test_labels)
    logging.info(
        "shapes evaluator held-out accuracy: %.3f on %d images", accuracy, len(test_labels)
    )
    return params, accuracy


def load_evaluator(
    shapes: ml_collections.ConfigDict, data: ml_collections.ConfigDict, batch_size: int = 500
) -> ShapesEvaluator:
    """The evaluator of `config.eval.shapes` for `config.data`: cached weights if usable,
    else trained now and cached (written atomically; a damaged cache is named in a warning and
    rewritten)."""
    path = cache_path(shapes, data)
    model = ShapesClassifier(data.num_classes, shapes.width)
    template = jax.eval_shape(
        model.init, jax.random.key(0), jnp.zeros((1, data.image_size, data.image_size, 3))
    )

    def train() -> dict[str, Any]:
        logging.info("shapes evaluator: training (cached afterwards at %s)", path)
        params, accuracy = train_evaluator(shapes, data)
        return {"params": params, "accuracy": accuracy}

    stored = instruments.shipped_or_cached(
        path, {"params": template["params"], "accuracy": 0.0}, train, "shapes evaluator"
    )
    params, accuracy = stored["params"], float(stored["accuracy"])
    apply = jax.jit(lambda images: model.apply({"params": params}, images))

    def featurize(images: np.ndarray) -> dict[str, np.ndarray]:
        outs = [apply(images[i : i + batch_size]) for i in range(0, len(images), batch_size)]
        return {
            "features": np.concatenate([np.asarray(f) for f, _ in outs]),
            "logits": np.concatenate([np.asarray(logits) for _, logits in outs]),
        }

    return ShapesEvaluator(featurize, accuracy)


def class_accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of samples whose predicted class is the one they were drawn for.

    logits: (N, classes); labels: (N,) the conditioning labels.
    """
    return float(np.mean(np.argmax(logits, axis=-1) == labels))


def reference_images(data: ml_collections.ConfigDict, count: int) -> np.ndarray:
    """The shapes data's own reference set: its first min(count, data.num_examples) training
    records' images, uint8 (N, S, S, 3) (what the in-training `fd` compares against)."""
    source = ShapesSource(data.num_examples, data.image_size, data.num_classes, data.seed)
    return np.stack([source[i]["image"] for i in range(min(count, len(source)))])


# Resamples of the bootstrap that gives fd's standard error: enough for its first digit.
BOOTSTRAP = 20


def scores(
    features: dict[str, np.ndarray], labels: np.ndarray, reference: metrics.FeatureStats
) -> dict[str, float]:
    """{"fd", "class_acc"} of samples' evaluator `features` (as `featurize` returns them) drawn
    for `labels` (N,), against the reference images' feature statistics, and how much each
    would move with another draw of N samples: "class_acc_se", the binomial standard error
    sqrt(p (1 - p) / N), and "fd_se", the spread (ddof 1) of fd over BOOTSTRAP resamples of the
    samples with replacement (a fixed generator: the same samples give the same figure). A
    difference between methods smaller than about twice these is within the evaluator's noise.
    """
    ours = features["features"]
    accuracy = class_accuracy(features["logits"], labels)
    rng = np.random.default_rng(0)
    resampled = [
        metrics.frechet_distance(
            metrics.feature_stats(ours[rng.integers(0, len(ours), len(ours))]), reference
        )
        for _ in range(BOOTSTRAP)
    ]
    return {
        "fd": metrics.frechet_distance(metrics.feature_stats(ours), reference),
        "class_acc": accuracy,
        "fd_se": float(np.std(resampled, ddof=1)),
        "class_acc_se": float(np.sqrt(accuracy * (1 - accuracy) / len(labels))),
    }
