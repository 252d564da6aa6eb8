"""The aligned representations of a model on fixed training records, and how alike they are.

z_enc are the frozen encoder's patch tokens, z_den the SiT's hidden state after block
`model.encoder_depth` at a fixed diffusion time, h_den its projection (SARA.md's names). Fig. 2's
analyses (`python -m sara_jax.analysis`) read them, and so does the in-training evaluation,
which logs their spatial structure (iREPA's metrics, `evaluation.spatial`) and the structural
gap ||A(z_enc) - A(.)||^2 (`objective.losses.structural_loss`, L_struc's own measure) for every
method: trained by SARA, only measured for REPA and the plain SiT.
"""

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from sara_jax.encoders.load import Encoder
from sara_jax.evaluation import spatial
from sara_jax.models.trained import Models
from sara_jax.objective import losses
from sara_jax.objective.family import clean_input, make_objective

PyTree = Any
Representations = Callable[[PyTree, PyTree, dict[str, np.ndarray]], dict[str, jax.Array]]


def probe_batch(source: Sequence[dict], count: int, tokens_per_side: int) -> dict[str, np.ndarray]:
    """The first `count` records of `source`, stacked, and where the source knows which pixels
    are object (the shapes data), "foreground": (count, N) bool, a token being object when most
    of its cell of the tokens_per_side x tokens_per_side grid is."""
    batch = {k: np.stack([source[i][k] for i in range(count)]) for k in source[0]}
    if hasattr(source, "foreground"):
        masks = np.stack([source.foreground(i) for i in range(count)]).astype(np.float32)
        b, size, _ = masks.shape
        cell = size // tokens_per_side
        cells = masks.reshape(b, tokens_per_side, cell, tokens_per_side, cell).mean(axis=(2, 4))
        batch["foreground"] = (cells > 0.5).reshape(b, -1)
    return batch


def make_representations(
    config: ml_collections.ConfigDict,
    models: Models,
    encoder_features: Callable[[PyTree, jax.Array], jax.Array],
    count: int,
    t: float,
) -> Representations:
    """`(params, encoder_params, batch) -> {"z_enc", "z_den", "h_den"}`, each (count, N, D or
    hidden_size) float32, jitted.

    The SiT sees x_t = (1 - t) x0 + t eps (a DiT: q(x_s | x0) at step s = round(t (T - 1)))
    with eps drawn from (config.seed, record index) and the records' own labels, so the same
    params always give the same representations.
    """
    keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.key(config.seed), i))(jnp.arange(count))
    objective = make_objective(config)
    if config.model.family == "dit":  # The same fraction of the way to noise, as a step.
        times = jnp.full((count,), round(t * (config.diffusion.num_timesteps - 1)))
    else:
        times = jnp.full((count,), t, jnp.float32)

    def clean_and_noise(key: jax.Array, example: dict[str, jax.Array]):
        k_latent, k_eps = jax.random.split(key)
        x0 = clean_input(example, k_latent, config.data)
        return x0, jax.random.normal(k_eps, x0.shape)

    @jax.jit
    def representations(params: PyTree, encoder_params: PyTree, batch: dict[str, jax.Array]):
        x0, eps = jax.vmap(clean_and_noise)(keys, batch)
        inputs = objective.network_inputs(x0, eps, times)
        _, z_den = models.sit.apply(
            {"params": params["sit"]}, inputs["x_t"], inputs["t"], batch["label"]
        )
        h_den = models.projector.apply({"params": params["projector"]}, z_den)
        z_enc = encoder_features(encoder_params, batch["image"])
        as_f32 = lambda x: x.astype(jnp.float32)  # noqa: E731
        return {"z_enc": as_f32(z_enc), "z_den": as_f32(z_den), "h_den": as_f32(h_den)}

    return representations


def make_probe(
    config: ml_collections.ConfigDict,
    models: Models,
    encoder: Encoder,
    source: Sequence[dict],
    count: int,
    t: float,
) -> tuple[Callable[[PyTree], dict[str, jax.Array]], np.ndarray | None]:
    """`params -> {"z_enc", "z_den", "h_den"}` of the first `count` records of `source` at time
    t (`make_representations` on `probe_batch`), and their foreground token masks (count, N),
    None where the data has none."""
    side = config.model.input_size // config.model.patch_size
    batch = probe_batch(source, count, side)
    foreground = batch.pop("foreground", None)
    forward = make_representations(config, models, encoder.features, count, t)
    return (lambda params: forward(params, encoder.params, batch)), foreground


def alignment_metrics(
    reps: dict[str, jax.Array], foreground: np.ndarray | None, reduction: str
) -> dict[str, float]:
    """The spatial-structure metrics of every representation and the structural gap of z_den
    and h_den to z_enc.

    Args:
      reps: "z_enc", "z_den", "h_den": (B, N, D or hidden) on a square token grid.
      foreground: (B, N) bool, for SRSS; None leaves SRSS out.
      reduction: `loss.struc_reduction`, so that the gap is on L_struc's scale.
    Returns: {"spatial/<name>/<metric>": value, "struc_gap/z_den", "struc_gap/h_den"}.
    """
    structure = spatial.spatial_metrics(
        reps, None if foreground is None else jnp.asarray(foreground)
    )
    out = {f"spatial/{key}": value for key, value in structure.items()}
    for name in ("z_den", "h_den"):
        gap = losses.structural_loss(reps["z_enc"], reps[name], reduction)
        out[f"struc_gap/{name}"] = float(gap)
    return out
