"""What test files in different tiers share: the tiny run config (in-process and as flags), its
variants, and stand-ins. pytest.ini puts tests/ on the path: `from helpers import ...`.

Tests take the config through the `tiny_config` fixture (conftest.py); module-level flag lists
and helpers that are not fixtures call these functions.
"""

import ml_collections
import numpy as np

from configs import demo
from sara_jax.config import validate

# configs/demo.py (32-pixel shapes, 10 classes) with a SiT, projector and encoder that compile
# in seconds on a CPU.
TINY = {
    "model.depth": 2,
    "model.hidden_size": 32,
    "model.num_heads": 2,
    "model.encoder_depth": 1,
    "projector.width": 32,
    "encoder.arch.embed_dim": 16,
    "encoder.arch.depth": 1,
    "encoder.arch.num_heads": 2,
}

BATCH = 16

# The train step's tests: 16-pixel images (4x4 tokens), 3 blocks aligned after the 2nd, D every
# step, BATCH examples.
STEP = {
    "data.image_size": 16,
    "encoder.image_size": 16,
    "model.depth": 3,
    "model.encoder_depth": 2,
    "data.global_batch_size": BATCH,
    "disc.every": 1,
    "train.ema_decay": 0.9,
    # Pinned, not the demo's: the 8-vs-1-device tolerances are sized for updates of this lr.
    "optim.lr": 5e-4,
}

# The in-training FID's tests (with STEP): 12 samples drawn in chunks of 8, 2 SDE steps; the
# demo's own evaluation (shapes, every 500 steps) off until a test sets its eval.every.
EVAL = {
    "sample.batch_size": 8,
    "sample.method": "sde",
    "eval.every": 0,
    "eval.featurizer": "inception",
    "eval.num_samples": 12,
    "eval.num_steps": 2,
}

# The demo encoder's pretraining tests: 32 wide, 60 steps on 512 of 1024 shapes.
PRETRAIN = {
    "encoder.arch.embed_dim": 32,
    "encoder.pretrain.steps": 60,
    "encoder.pretrain.batch_size": 64,
    "encoder.pretrain.num_examples": 512,
    "data.num_examples": 1024,
}


def tiny_config(*changes: dict, **overrides) -> ml_collections.ConfigDict:
    """configs/demo.py with TINY, then each of `changes` and `overrides` (dotted field names,
    later ones win), validated: `tiny_config(STEP, **{"disc.every": 3})`."""
    config = demo.get_config()
    for change in (TINY, *changes, overrides):
        config.update_from_flattened_dict(change)
    validate(config)
    return config


def tiny_flags(**overrides) -> list[str]:
    """The same config as command-line flags: `--config=configs/demo.py --config.<name>=...`."""
    values = {**TINY, **overrides}
    return ["--config=configs/demo.py", *(f"--config.{k}={v}" for k, v in values.items())]


def solid(color, n):
    """An n x n block of one RGB colour."""
    return np.broadcast_to(color, (n, n, 3))


def symmetric_sqrtm(a: np.ndarray) -> np.ndarray:
    """sqrtm for the symmetric PSD products of a set with itself (scipy's takes ~20 s)."""
    w, v = np.linalg.eigh((a + a.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def fake_featurize(images: np.ndarray) -> dict[str, np.ndarray]:
    """Deterministic per-image features of the real shapes, from the pixels."""
    flat = images.reshape(len(images), -1).astype(np.float64) / 255
    rng = np.random.default_rng(0)
    return {
        "pool3": flat @ rng.standard_normal((flat.shape[1], 2048)),
        "logits": flat @ rng.standard_normal((flat.shape[1], 1008)),
        "spatial": flat @ rng.standard_normal((flat.shape[1], 2023)),
    }


def random_encoder():
    """A random frozen encoder with 4 x 4 tokens of width 16 on 16-pixel images: enough to
    exercise the train step (the demo pretrains its own). Returns (features, params)."""
    import jax  # Here: importing helpers must not import jax before conftest sets XLA_FLAGS.
    import jax.numpy as jnp

    from sara_jax.encoders.preprocess import imagenet_normalize
    from sara_jax.models.dinov2 import DinoV2

    module = DinoV2(patch_size=4, embed_dim=16, depth=1, num_heads=2, pos_grid=4)
    params = module.init(jax.random.key(7), jnp.zeros((1, 16, 16, 3)))["params"]

    def features(params, images):
        return module.apply({"params": params}, imagenet_normalize(images))["x_norm_patchtokens"]

    return features, params
