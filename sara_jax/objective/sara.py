"""SARA's two objectives: the generator's (Eq. 11) and the discriminator's (Eq. 9).

Both read the loss terms of `losses` and the modules of `training.state.Models`; the train step
(`training.step`) only differentiates them, averages over devices and applies the updates.
"""

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from sara_jax.objective import losses
from sara_jax.objective.family import Batch, make_objective
from sara_jax.training.state import Models

PyTree = Any


def disc_logits(
    models: Models, disc: PyTree, tokens: jax.Array, bn_train: bool
) -> tuple[jax.Array, PyTree]:
    """D's logits (B,) on tokens (B, N, D) and its batch statistics (updated in train-mode BN)."""
    if bn_train:
        logits, updates = models.disc.apply(disc, tokens, train=True, mutable=["batch_stats"])
        return logits, updates["batch_stats"]
    return models.disc.apply(disc, tokens, train=False), disc["batch_stats"]


def generator_loss(
    params: PyTree,
    disc: PyTree,
    inputs: Batch,
    models: Models,
    config: ml_collections.ConfigDict,
    gamma: jax.Array,
) -> tuple[jax.Array, tuple[dict[str, jax.Array], jax.Array | None]]:
    """Eq. 11: L_denoise + lambda L_patch + beta L_struc + gamma L_adv.

    L_denoise is the family's objective (`make_objective`): L_velocity for the SiT, L_simple +
    L_vlb for the DiT. The alignment terms act on the same hidden state for both.

    Terms whose weight is 0 in the config are not computed at all (a plain SiT runs neither
    projector nor D; REPA runs no D), so the baselines cost what they cost in their own papers.

    Args:
      params: {"sit", "projector"}, the variables differentiated.
      disc: D's variables, held fixed: L_adv trains the SiT and projector only.
      inputs: "x_t" (B, H, W, C), "t" (B,), "labels" (B,), the objective's own inputs ("target"
        (B, H, W, C) velocity for the SiT; "x0", "eps" for the DiT), "z_enc" (B, N, D) encoder
        features (absent without alignment).
      gamma: the adversarial weight in force at this step.
    Returns: total loss, (each computed term, h_den (B, N, D) or None without alignment).
    """
    lc = config.loss
    output, hidden = models.sit.apply(
        {"params": params["sit"]}, inputs["x_t"], inputs["t"], inputs["labels"]
    )
    total, terms = make_objective(config).loss(output, inputs)
    if not aligned(config):
        return total, (terms, None)
    h_den = models.projector.apply({"params": params["projector"]}, hidden)
    z_enc = inputs["z_enc"]
    if lc.patch_weight > 0:
        terms["patch"] = losses.patch_alignment_loss(z_enc, h_den)
        total += lc.patch_weight * terms["patch"]
    if lc.struc_weight > 0:
        terms["struc"] = losses.structural_loss(z_enc, h_den, lc.struc_reduction)
        total += lc.struc_weight * terms["struc"]
    if adversarial(config):
        fake_logits, _ = disc_logits(models, disc, h_den, config.disc.bn_mode == "train")
        terms["adv"] = losses.adversarial_loss(fake_logits)
        total += gamma * terms["adv"]
    return total, (terms, h_den)


def aligned(config: ml_collections.ConfigDict) -> bool:
    """Whether any alignment term is on, i.e. the step needs the encoder and the projector."""
    lc = config.loss
    return lc.patch_weight > 0 or lc.struc_weight > 0 or lc.adv_weight > 0


def adversarial(config: ml_collections.ConfigDict) -> bool:
    """Whether L_adv is on, i.e. the step needs D and updates it every `disc.every` steps."""
    return config.loss.adv_weight > 0


def disc_objective(
    d_params: PyTree,
    batch_stats: PyTree,
    real: jax.Array,
    fake: jax.Array,
    models: Models,
    bn_train: bool,
) -> tuple[jax.Array, tuple[PyTree, dict[str, jax.Array]]]:
    """Eq. 9 on real = z_enc and fake = sg(h_den), both (B, N, D).

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
