"""SARA's two objectives: the generator's (Eq. 11) and the discriminator's (Eq. 9), with the
forward passes they are made of (Eq. 1, 4, 5).

The terms are `losses`'s; the modules are `models.trained.Models`. The train step
(`training.step`) only differentiates these functions, averages over devices and applies the
updates.
"""

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
from jax import lax

from sara_jax.models.trained import Models
from sara_jax.objective import losses
from sara_jax.objective.family import Batch, make_objective

PyTree = Any


def disc_logits(
    models: Models, disc: PyTree, tokens: jax.Array, bn_train: bool
) -> tuple[jax.Array, PyTree]:
    """D's logits (B,) on tokens (B, N, D) and its batch statistics (updated in train-mode BN)."""
    if bn_train:
        logits, updates = models.disc.apply(disc, tokens, train=True, mutable=["batch_stats"])
        return logits, updates["batch_stats"]
    return models.disc.apply(disc, tokens, train=False), disc["batch_stats"]


def encoder_targets(
    encoder_features: Callable[[PyTree, jax.Array], jax.Array],
    encoder_params: PyTree,
    images: jax.Array,
) -> jax.Array:
    """z_enc = E(X_0) (Eq. 1): the frozen encoder's patch tokens (B, N, D) of uint8 images
    (B, H, W, 3), with no gradient (the encoder is never trained)."""
    return lax.stop_gradient(encoder_features(encoder_params, images))


def alignment_targets(
    z_enc: jax.Array, loss: ml_collections.ConfigDict
) -> tuple[jax.Array, jax.Array]:
    """The encoder tokens each alignment term compares to: (L_patch's, the others').

    With `loss.encoder_norm` "zscore" the tokens are iREPA's spatially normalised ones
    (`losses.spatial_zscore`): for every term when `loss.encoder_norm_terms` is "all" (iREPA's
    trainer normalises z once for all its projection losses), for L_patch only when "patch"
    (L_struc and D's real tokens then keep the raw z_enc).

    Args: z_enc: (B, N, D), the encoder's tokens (`encoder_targets`).
    Returns: (L_patch's targets, L_struc's targets and D's real tokens), both (B, N, D).
    """
    if loss.encoder_norm == "none":
        return z_enc, z_enc
    if loss.encoder_norm != "zscore":
        raise ValueError(f"loss.encoder_norm must be 'none' or 'zscore', got {loss.encoder_norm!r}")
    z_norm = losses.spatial_zscore(z_enc, loss.zscore_alpha)
    return z_norm, (z_norm if loss.encoder_norm_terms == "all" else z_enc)


def denoiser_forward(params: PyTree, inputs: Batch, models: Models) -> tuple[jax.Array, jax.Array]:
    """f_theta(x_t, t, y) and z_den, the hidden state after block `model.encoder_depth` (Eq. 4).

    Returns: the network's output (B, H, W, C or 2C) and z_den (B, N, hidden_size).
    """
    return models.sit.apply({"params": params["sit"]}, inputs["x_t"], inputs["t"], inputs["labels"])


def project(params: PyTree, z_den: jax.Array, models: Models) -> jax.Array:
    """h_den = M_proj(z_den) (Eq. 5): (B, N, hidden_size) -> (B, N, D), the encoder's width."""
    return models.projector.apply({"params": params["projector"]}, z_den)


def adversarial_weight(step: jax.Array, loss: ml_collections.ConfigDict) -> jax.Array:
    """gamma in force at `step`: 0 for the first `loss.adv_warmup_steps`, then `loss.adv_weight`."""
    return jnp.where(step < loss.adv_warmup_steps, 0.0, loss.adv_weight)


def generator_loss(
    params: PyTree,
    disc: PyTree,
    inputs: Batch,
    models: Models,
    config: ml_collections.ConfigDict,
    gamma: jax.Array,
) -> tuple[jax.Array, tuple[dict[str, jax.Array], jax.Array | None]]:
    """L = L_denoise + lambda L_patch + beta L_struc + gamma L_adv (Eq. 11).

    L_denoise is the family's objective (`make_objective`): L_velocity for the SiT, L_simple +
    L_vlb for the DiT. The alignment terms act on the same hidden state for both.

    Terms whose weight is 0 in the config are not computed at all (a plain SiT runs neither
    projector nor D; REPA runs no D), so the baselines cost what they cost in their own papers.

    Args:
      params: {"sit", "projector"}, the variables differentiated.
      disc: D's variables, held fixed: L_adv trains the SiT and projector only.
      inputs: "x_t" (B, H, W, C), "t" (B,), "labels" (B,), the objective's own inputs ("target"
        (B, H, W, C) velocity for the SiT; "x0", "eps" for the DiT), "z_enc" (B, N, D) encoder
        features as the encoder gives them (absent without alignment; normalised here as
        `alignment_targets` says).
      gamma: the adversarial weight in force at this step.
    Returns: total loss, (each computed term, h_den (B, N, D) or None without alignment).
    """
    lc = config.loss
    output, z_den = denoiser_forward(params, inputs, models)
    total, terms = make_objective(config).loss(output, inputs)
    if not aligned(lc):
        return total, (terms, None)
    h_den = project(params, z_den, models)
    z_patch, z_struc = alignment_targets(inputs["z_enc"], lc)
    if lc.patch_weight > 0:
        terms["patch"] = losses.patch_alignment_loss(z_patch, h_den)
        total += lc.patch_weight * terms["patch"]
    if lc.struc_weight > 0:
        terms["struc"] = losses.structural_loss(z_struc, h_den, lc.struc_reduction)
        total += lc.struc_weight * terms["struc"]
    if adversarial(lc):
        fake_logits, _ = disc_logits(models, disc, h_den, config.disc.bn_mode == "train")
        terms["adv"] = losses.adversarial_loss(fake_logits)
        total += gamma * terms["adv"]
    return total, (terms, h_den)


def aligned(loss: ml_collections.ConfigDict) -> bool:
    """Whether any alignment term is on, i.e. the step needs the encoder and the projector."""
    return loss.patch_weight > 0 or loss.struc_weight > 0 or loss.adv_weight > 0


def adversarial(loss: ml_collections.ConfigDict) -> bool:
    """Whether L_adv is on, i.e. the step needs D and updates it every `disc.every` steps."""
    return loss.adv_weight > 0


def disc_objective(
    d_params: PyTree,
    batch_stats: PyTree,
    real: jax.Array,
    fake: jax.Array,
    models: Models,
    bn_train: bool,
) -> tuple[jax.Array, tuple[PyTree, dict[str, jax.Array]]]:
    """L_D (Eq. 9) of D's params on real = z_enc (as `alignment_targets` hands it to L_struc
    and D) and fake = sg(h_den), both (B, N, D).

    Returns: L_D, (updated batch statistics, D's accuracy on real and on fake tokens).
    """
    real_logits, stats = disc_logits(
        models, {"params": d_params, "batch_stats": batch_stats}, real, bn_train
    )
    fake_logits, stats = disc_logits(
        models, {"params": d_params, "batch_stats": stats}, fake, bn_train
    )
    accuracy = {
        "disc_acc_real": jnp.mean(real_logits > 0),
        "disc_acc_fake": jnp.mean(fake_logits < 0),
    }
    return losses.discriminator_loss(real_logits, fake_logits), (stats, accuracy)
