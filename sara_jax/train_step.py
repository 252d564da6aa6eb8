"""One SARA training step (paper Eq. 11), data-parallel with `jax.shard_map`.

Each device holds a slice of the global batch and a replica of the TrainState. Gradients of the
local losses are averaged with `lax.pmean`, so every replica applies the same update. All
randomness of an example is drawn from (seed, step, global example index): the result does not
depend on how many devices share the batch. The denoising objective is the model family's
(`make_objective`): SiT's velocity loss or DiT's DDPM hybrid loss; the alignment terms are the
same for both.
"""

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import optax
from jax import lax
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from sara_jax import diffusion, losses, transport
from sara_jax.train_state import Models, TrainState, make_optimizer

PyTree = Any
Batch = dict[str, jax.Array]
AXIS = "data"


def data_mesh(devices: list[jax.Device] | None = None) -> Mesh:
    """A 1D mesh over `devices` (default: all) whose one axis, `data`, splits the batch.

    The axis is of Auto type: only shard_map names it, and arrays made outside the step (the
    sampler's noise, say) mix freely with the replicated state.
    """
    devices = jax.devices() if devices is None else devices
    return jax.make_mesh(
        (len(devices),), (AXIS,), axis_types=(jax.sharding.AxisType.Auto,), devices=devices
    )


def clean_input(example: Batch, key: jax.Array, data: ml_collections.ConfigDict) -> jax.Array:
    """x0 of one example: the image in [-1, 1] (pixel space) or a scaled VAE posterior sample.

    Args:
      example: "image" uint8 (H, W, 3), or "latent_mean"/"latent_std" float (h, w, 4).
      key: PRNG key of the latent sample (unused in pixel space).
    """
    if data.space == "pixel":
        return example["image"].astype(jnp.float32) / 127.5 - 1.0
    mean = example["latent_mean"].astype(jnp.float32)
    std = example["latent_std"].astype(jnp.float32)
    return (mean + std * jax.random.normal(key, mean.shape)) * data.latent_scale


class Objective(NamedTuple):
    """A model family's denoising objective.

    sample_time: key -> one example's t: float in [0, 1] (SiT) or int step in [0, T) (DiT).
    network_inputs: (x0 (B, H, W, C), eps (B, H, W, C), t (B,)) -> "x_t" and "t" for the
      network, and what `loss` needs besides its output.
    loss: (network output, inputs) -> (the denoising loss, {name: term} to log).
    """

    sample_time: Callable[[jax.Array], jax.Array]
    network_inputs: Callable[[jax.Array, jax.Array, jax.Array], Batch]
    loss: Callable[[jax.Array, Batch], tuple[jax.Array, dict[str, jax.Array]]]


def make_objective(config: ml_collections.ConfigDict) -> Objective:
    """SiT's velocity regression or DiT's DDPM objective, as `config.model.family` says.

    "sit": x_t = (1 - t) x0 + t eps with t ~ U(0, 1), L_velocity on eps - x0 (logged
    "velocity"). "dit": t ~ U{0, .., T-1}, x_t from q(x_t | x_0), L_simple + L_vlb on the
    2C-channel output (logged "mse" and "vlb"); the DiT is fed the integer step as its time.
    """
    if config.model.family == "sit":

        def velocity_inputs(x0: jax.Array, eps: jax.Array, t: jax.Array) -> Batch:
            target = transport.velocity_target(x0, eps)
            return {"x_t": transport.interpolate(x0, eps, t), "t": t, "target": target}

        def velocity_objective(output: jax.Array, inputs: Batch) -> tuple[jax.Array, Batch]:
            terms = {"velocity": losses.velocity_loss(output, inputs["target"])}
            return terms["velocity"], terms

        return Objective(transport.sample_time, velocity_inputs, velocity_objective)

    d = config.diffusion
    schedule = diffusion.linear_schedule(d.num_timesteps, d.beta_start, d.beta_end)

    def sample_step(key: jax.Array) -> jax.Array:
        return jax.random.randint(key, (), 0, d.num_timesteps)

    def ddpm_inputs(x0: jax.Array, eps: jax.Array, t: jax.Array) -> Batch:
        return {"x_t": diffusion.q_sample(schedule, x0, t, eps), "t": t, "x0": x0, "eps": eps}

    def ddpm_objective(output: jax.Array, inputs: Batch) -> tuple[jax.Array, Batch]:
        return diffusion.hybrid_loss(
            schedule, output, inputs["x0"], inputs["x_t"], inputs["t"], inputs["eps"]
        )

    return Objective(sample_step, ddpm_inputs, ddpm_objective)


def example_inputs(
    key: jax.Array, example: Batch, config: ml_collections.ConfigDict
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """The diffusion inputs of one example: (x0, t, eps, label with CFG dropout applied)."""
    k_t, k_eps, k_latent, k_drop = jax.random.split(key, 4)
    x0 = clean_input(example, k_latent, config.data)
    t = make_objective(config).sample_time(k_t)
    eps = jax.random.normal(k_eps, x0.shape)
    dropped = jax.random.uniform(k_drop) < config.model.class_dropout
    label = jnp.where(dropped, config.model.num_classes, example["label"])
    return x0, t, eps, label


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


def accumulated_gradients(
    params: PyTree,
    disc: PyTree,
    inputs: Batch,
    models: Models,
    config: ml_collections.ConfigDict,
    gamma: jax.Array,
) -> tuple[jax.Array, dict[str, jax.Array], jax.Array, PyTree]:
    """Gradient of `generator_loss` over the local batch, in `train.grad_accum_steps` pieces.

    The loss is a mean over examples, so the mean over equal micro-batches is the full-batch
    value; only one micro-batch's activations are alive at a time.
    Returns: total loss, its terms, h_den (B, N, D) of the whole local batch (None without
      alignment), gradients.
    """
    grad_fn = jax.value_and_grad(generator_loss, has_aux=True)
    accum = config.train.grad_accum_steps
    if accum == 1:
        (total, (terms, h_den)), grads = grad_fn(params, disc, inputs, models, config, gamma)
        return total, terms, h_den, grads

    micro = jax.tree.map(lambda x: x.reshape(accum, -1, *x.shape[1:]), inputs)

    def add_micro_batch(carry, micro_inputs):
        (total, (terms, h_den)), grads = grad_fn(params, disc, micro_inputs, models, config, gamma)
        return jax.tree.map(jnp.add, carry, (total, terms, grads)), h_den

    shapes = jax.eval_shape(
        lambda p, mb: grad_fn(p, disc, mb, models, config, gamma),
        params,
        jax.tree.map(lambda x: x[0], micro),
    )
    (_, (terms_shape, _)), grads_shape = shapes
    zeros = jax.tree.map(
        lambda s: jnp.zeros(s.shape, s.dtype), (shapes[0][0], terms_shape, grads_shape)
    )
    zeros = lax.pcast(zeros, AXIS, to="varying")
    sums, h_den = lax.scan(add_micro_batch, zeros, micro)
    total, terms, grads = jax.tree.map(lambda x: x / accum, sums)
    if h_den is not None:  # (accum, B / accum, N, D) -> (B, N, D)
        h_den = h_den.reshape(-1, *h_den.shape[2:])
    return total, terms, h_den, grads


def discriminator_step(
    state: TrainState,
    real: jax.Array,
    fake: jax.Array,
    models: Models,
    config: ml_collections.ConfigDict,
    disc_tx: optax.GradientTransformation,
    disc_gate: str,
) -> tuple[PyTree, PyTree, dict[str, jax.Array]]:
    """D's update on steps with `step % disc.every == 0`, inside shard_map.

    Args:
      real: z_enc (B, N, D); fake: sg(h_den) (B, N, D), this device's examples.
      disc_gate: "cond" or "mask", see `make_train_step`.
    Returns: D's variables, its optimizer state, and L_D with D's accuracies (computed with the
      pre-update D on every step, so the logs are comparable across steps).
    """
    bn_train = config.disc.bn_mode == "train"

    def update_disc(_):
        d_params = lax.pcast(state.disc["params"], AXIS, to="varying")
        (loss, (stats, accuracy)), d_grads = jax.value_and_grad(disc_objective, has_aux=True)(
            d_params, state.disc["batch_stats"], real, fake, models, bn_train
        )
        d_grads = lax.pmean(d_grads, AXIS)
        d_updates, d_opt_state = disc_tx.update(d_grads, state.disc_opt_state, state.disc["params"])
        disc = {
            "params": optax.apply_updates(state.disc["params"], d_updates),
            "batch_stats": stats,
        }
        return disc, d_opt_state, {"disc_loss": loss, **accuracy}

    def keep_disc(_):
        loss, (_, accuracy) = disc_objective(
            state.disc["params"], state.disc["batch_stats"], real, fake, models, bn_train
        )
        return state.disc, state.disc_opt_state, {"disc_loss": loss, **accuracy}

    update = state.step % config.disc.every == 0
    if disc_gate == "cond":  # Only the taken branch runs.
        return lax.cond(update, update_disc, keep_disc, None)
    # "mask": computes the update every step and keeps it on D steps.
    disc, disc_opt_state, metrics = update_disc(None)
    disc, disc_opt_state = jax.tree.map(
        lambda new, old: jnp.where(update, new, old),
        (disc, disc_opt_state),
        (state.disc, state.disc_opt_state),
    )
    return disc, disc_opt_state, metrics


def make_train_step(
    config: ml_collections.ConfigDict,
    models: Models,
    encoder_features: Callable[[PyTree, jax.Array], jax.Array],
    mesh: Mesh,
    disc_gate: str | None = None,
) -> Callable[[TrainState, Batch, PyTree], tuple[TrainState, dict[str, jax.Array]]]:
    """Builds the jitted step `(state, batch, encoder_params) -> (state, metrics)`.

    Args:
      models: the SiT, projector and discriminator modules.
      encoder_features: frozen encoder, (params, uint8 images (B, H, W, 3)) -> z_enc (B, N, D).
      mesh: a mesh with a `data` axis; `batch` is sharded over it, the rest is replicated.
      disc_gate: how the every-`disc.every`-steps D update is gated: "cond" (lax.cond, only the
        taken branch runs) or "mask" (computed every step, applied with a select). None picks
        "mask" for a CPU mesh, where XLA runs the convolutions inside a conditional some 50x slower,
        and "cond" elsewhere. Both give the same result.
    The state argument is donated. Metrics are global-batch averages (float32 scalars).
    """
    tx = make_optimizer(config.optim)
    disc_tx = make_optimizer(config.disc.optim)
    objective = make_objective(config)
    lc = config.loss
    decay = config.train.ema_decay
    if disc_gate is None:
        disc_gate = "mask" if mesh.devices.flat[0].platform == "cpu" else "cond"
    if disc_gate not in ("cond", "mask"):
        raise ValueError(f"disc_gate must be 'cond' or 'mask', got {disc_gate!r}")

    def local_step(state: TrainState, batch: Batch, encoder_params: PyTree):
        local_batch = batch["label"].shape[0]
        index = lax.axis_index(AXIS) * local_batch + jnp.arange(local_batch)
        step_key = jax.random.fold_in(jax.random.key(config.seed), state.step)
        keys = jax.vmap(lambda i: jax.random.fold_in(step_key, i))(index)
        x0, t, eps, labels = jax.vmap(lambda k, ex: example_inputs(k, ex, config))(keys, batch)
        inputs = {**objective.network_inputs(x0, eps, t), "labels": labels}
        if aligned(config):
            z_enc = lax.stop_gradient(encoder_features(encoder_params, batch["image"]))
            inputs["z_enc"] = z_enc
        gamma = jnp.where(state.step < lc.adv_warmup_steps, 0.0, lc.adv_weight)

        # Differentiate w.r.t. a per-device copy of the params so the gradient is the local one;
        # pmean then averages it over the global batch.
        local_params = lax.pcast(state.params, AXIS, to="varying")
        total, terms, h_den, grads = accumulated_gradients(
            local_params, state.disc, inputs, models, config, gamma
        )
        grads = lax.pmean(grads, AXIS)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        ema_params = jax.tree.map(
            lambda e, p: decay * e + (1 - decay) * p, state.ema_params, params
        )

        # Without L_adv, D and its optimizer state stay as initialised (and cost nothing).
        disc, disc_opt_state, disc_metrics = state.disc, state.disc_opt_state, {}
        if adversarial(config):
            disc, disc_opt_state, disc_metrics = discriminator_step(
                state, z_enc, lax.stop_gradient(h_den), models, config, disc_tx, disc_gate
            )
        metrics = {
            "loss": total,
            **terms,
            **disc_metrics,
            "grad_norm": optax.tree.norm(grads),
        }
        metrics = lax.pmean(metrics, AXIS)
        new_state = TrainState(
            step=state.step + 1,
            params=params,
            ema_params=ema_params,
            disc=disc,
            opt_state=opt_state,
            disc_opt_state=disc_opt_state,
        )
        # A NaN/inf anywhere is never applied: the state stays the last finite one (the select
        # fuses into the elementwise optimizer update). The host decides to stop or go on.
        finite = jnp.all(jnp.stack([jnp.isfinite(v) for v in metrics.values()]))
        new_state = jax.tree.map(
            lambda new, old: jnp.where(finite, new, old),
            new_state,
            state.replace(step=new_state.step),
        )
        metrics["nonfinite"] = 1.0 - finite.astype(jnp.float32)
        return new_state, metrics

    step = jax.shard_map(local_step, mesh=mesh, in_specs=(P(), P(AXIS), P()), out_specs=(P(), P()))
    return jax.jit(step, donate_argnums=(0,))
