"""A short supervised pretraining of the demo's small DINOv2-architecture encoder.

Offline there is no published encoder to align to, and a random encoder is no alignment target:
its patch tokens carry no semantics. The demo therefore trains a small DinoV2 to classify its
own training images (a linear head on [CLS, mean patch token], DINOv2's linear-probe input),
which makes its patch tokens semantic, and caches the weights keyed by everything that
determines them; the demo's and the study's weights ship with the code (`io.instruments`).
`fit_classifier` is that short supervised run, for any classifier (the shapes evaluator,
`evaluation.shapes`, is fitted with it too): AdamW on a cosine decay, batches drawn without
replacement from a seeded generator, so a run is a function of its arguments alone.
"""

import hashlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging

from sara_jax.encoders.preprocess import imagenet_normalize
from sara_jax.io import instruments, preemption
from sara_jax.models.dinov2 import DinoV2

PyTree = Any
# (params, uint8 or float images (B, H, W, 3)) -> logits (B, classes).
Logits = Callable[[PyTree, jax.Array], jax.Array]


def fit_classifier(
    logits_fn: Logits,
    params: PyTree,
    images: np.ndarray,
    labels: np.ndarray,
    *,
    steps: int,
    batch_size: int,
    lr: float,
    seed: int,
    name: str,
) -> PyTree:
    """`steps` AdamW steps (peak `lr`, cosine decay, weight decay 1e-4) on cross-entropy.

    Stops at a step boundary with `preemption.Preempted` after SIGTERM: nothing is cached
    until the run ends, so the rerun starts it again (and gets the same params).

    Args:
      images: (N, H, W, 3); labels: (N,) int; batches of `batch_size` distinct examples.
      name: what the progress and preemption log lines call the run.
    Returns: the trained params.
    """
    tx = optax.adamw(optax.cosine_decay_schedule(lr, steps), weight_decay=1e-4)
    opt_state = tx.init(params)

    @jax.jit
    def step(params, opt_state, images, labels):
        def loss_fn(params):
            logits = logits_fn(params, images)
            return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    rng = np.random.default_rng(seed)
    for i in range(steps):
        preemption.check(
            f"{name} stopped at step {i}/{steps}; nothing is cached yet, so the "
            "rerun starts it again"
        )
        batch = rng.choice(len(images), size=batch_size, replace=False)
        params, opt_state, loss = step(params, opt_state, images[batch], labels[batch])
        if (i + 1) % max(steps // 5, 1) == 0:
            logging.info("%s step %d/%d: loss %.4f", name, i + 1, steps, loss)
    return params


def classifier_accuracy(
    logits_fn: Logits, params: PyTree, images: np.ndarray, labels: np.ndarray, batch_size: int = 512
) -> float:
    """Fraction of `images` (N, H, W, 3) whose argmax logit is their label (N,)."""
    apply = jax.jit(logits_fn)
    predicted = np.concatenate(
        [
            np.argmax(apply(params, images[i : i + batch_size]), axis=-1)
            for i in range(0, len(images), batch_size)
        ]
    )
    return float(np.mean(predicted == labels))


def demo_vit(encoder: ml_collections.ConfigDict, dtype: jnp.dtype = jnp.float32) -> DinoV2:
    """The DinoV2 that `config.encoder.arch` describes, at `config.encoder.image_size`."""
    a = encoder.arch
    return DinoV2(
        patch_size=a.patch_size,
        embed_dim=a.embed_dim,
        depth=a.depth,
        num_heads=a.num_heads,
        pos_grid=encoder.image_size // a.patch_size,
        num_register_tokens=a.num_register_tokens,
        dtype=dtype,
    )


class LinearProbe(nn.Module):
    """DinoV2 backbone + a linear classifier on [CLS, mean patch token]."""

    backbone: DinoV2
    num_classes: int

    @nn.compact
    def __call__(self, images: jax.Array) -> jax.Array:
        """images: (B, H, W, 3) normalised -> logits (B, num_classes)."""
        out = self.backbone(images)
        pooled = [out["x_norm_clstoken"], out["x_norm_patchtokens"].mean(axis=1)]
        return nn.Dense(self.num_classes, name="head")(jnp.concatenate(pooled, axis=-1))


def cache_path(config: ml_collections.ConfigDict) -> Path:
    """A file name that changes whenever anything that determines the weights changes (the
    run's own seed does not: every seed of a study aligns to the same encoder, as to DINOv2)."""
    pretrain = {k: v for k, v in config.encoder.pretrain.items() if k != "cache_dir"}
    data = {k: config.data[k] for k in ("source", "image_size", "num_classes", "seed")}
    key = {
        "arch": config.encoder.arch.to_dict(),
        "image_size": config.encoder.image_size,
        "pretrain": pretrain,
        "data": data,
    }
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return Path(config.encoder.pretrain.cache_dir).expanduser() / f"demo_vit-{digest}.msgpack"


def _stack(source: Sequence[dict], indices: range) -> tuple[np.ndarray, np.ndarray]:
    records = [source[i] for i in indices]
    return np.stack([r["image"] for r in records]), np.array([r["label"] for r in records])


def pretrain_demo_vit(
    config: ml_collections.ConfigDict, source: Sequence[dict]
) -> tuple[PyTree, float]:
    """Trains the demo encoder with cross-entropy on `encoder.pretrain.num_examples` records.

    Returns: the backbone's params (the head is dropped) and the classifier's accuracy on up
    to 512 held-out records that follow the training ones.
    """
    p = config.encoder.pretrain
    held_out = min(512, max(len(source) - p.num_examples, 0))
    if held_out == 0:
        raise ValueError(
            f"config.encoder.pretrain.num_examples={p.num_examples} leaves no held-out "
            f"records of the {len(source)} in data.num_examples"
        )
    images, labels = _stack(source, range(p.num_examples))
    test_images, test_labels = _stack(source, range(p.num_examples, p.num_examples + held_out))
    model = LinearProbe(demo_vit(config.encoder), config.data.num_classes)
    params = model.init(jax.random.key(p.seed), imagenet_normalize(jnp.asarray(images[:1])))

    def logits_fn(params: PyTree, images: jax.Array) -> jax.Array:
        return model.apply({"params": params}, imagenet_normalize(images))

    params = fit_classifier(
        logits_fn,
        params["params"],
        images,
        labels,
        steps=p.steps,
        batch_size=p.batch_size,
        lr=p.lr,
        seed=p.seed,
        name="demo encoder pretraining",
    )
    accuracy = classifier_accuracy(logits_fn, params, test_images, test_labels)
    logging.info("demo encoder held-out accuracy: %.3f on %d images", accuracy, held_out)
    return params["backbone"], accuracy


def pretrained_demo_vit(config: ml_collections.ConfigDict, source: Sequence[dict]) -> PyTree:
    """The demo encoder's params: from the cache if it is usable, else pretrained now and
    cached (a damaged cache is named in a warning and rewritten)."""
    path = cache_path(config)
    module = demo_vit(config.encoder)
    size = config.encoder.image_size
    template = jax.eval_shape(module.init, jax.random.key(0), jnp.zeros((1, size, size, 3)))

    def pretrain() -> PyTree:
        logging.info("demo encoder: pretraining (cached afterwards at %s)", path)
        return pretrain_demo_vit(config, source)[0]

    return instruments.shipped_or_cached(path, template["params"], pretrain, "demo encoder")
