"""The FID InceptionV3 as a featurizer: uint8 images -> the features ADM's evaluator reads."""

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import tqdm
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from sara_jax.evaluation import metrics
from sara_jax.models.inception import FIDInceptionV3, preprocess

PyTree = Any


def make_featurizer(
    model: FIDInceptionV3, variables: PyTree, batch_size: int, preprocessing: str = "adm"
):
    """uint8 images (N, H, W, 3) -> {"pool3": (N, 2048), "spatial": (N, 2023), and "logits":
    (N, 1008) when the model has its fc} numpy arrays, in batches data parallel over this
    process's devices.

    preprocessing: "adm" (ADM's evaluator, the paper's numbers) or "pytorch_fid".
    """
    mesh = jax.sharding.Mesh(np.array(jax.local_devices()), ("data",))
    rows = NamedSharding(mesh, P("data"))
    variables = jax.device_put(variables, NamedSharding(mesh, P()))
    # Batches are padded to a multiple of the devices: any batch_size on any device count.
    width = -(-batch_size // mesh.devices.size) * mesh.devices.size

    @jax.jit
    def features(variables: PyTree, images: jax.Array) -> dict[str, jax.Array]:
        out = model.apply(variables, preprocess(images, preprocessing))
        features = {"pool3": out["pool3"], "mixed_6_conv": out["mixed_6_conv"]}
        if model.logits:
            # ADM's IS reads the logits MatMul, before the bias add.
            kernel = variables["params"]["fc"]["kernel"]
            features["logits"] = jnp.dot(out["pool3"], kernel, precision=jax.lax.Precision.HIGHEST)
        return features

    def run(images: np.ndarray) -> dict[str, np.ndarray]:
        parts = []
        for start in tqdm.trange(0, len(images), batch_size, unit="batch"):
            batch = images[start : start + batch_size]
            padded = np.resize(batch, (width, *batch.shape[1:]))
            out = features(variables, jax.device_put(padded, rows))
            parts.append({k: np.asarray(v)[: len(batch)] for k, v in out.items()})
        joined = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        joined["spatial"] = metrics.spatial_features(joined.pop("mixed_6_conv"))
        return joined

    return run
