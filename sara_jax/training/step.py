"""One SARA training step (paper Eq. 11), data-parallel with `jax.shard_map`.

Each device holds a slice of the global batch and a replica of the TrainState. Gradients of the
local losses are averaged with `lax.pmean`, so every replica applies the same update. All
randomness of an example is drawn from (seed, step, global example index): the result does not
depend on how many devices share the batch. The denoising objective is the model family's
(`make_objective`): SiT's velocity loss or DiT's DDPM hybrid loss; the alignment terms are the
same for both.
"""

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax
from jax import lax
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from sara_jax.objective.family import Batch, example_inputs, make_objective
from sara_jax.objective.sara import (
    adversarial,
    adversarial_weight,
    aligned,
    disc_objective,
    encoder_targets,
    generator_loss,
)
from sara_jax.training.state import Models, TrainState, make_optimizer

PyTree = Any
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
    disc_config: ml_collections.ConfigDict,
    disc_tx: optax.GradientTransformation,
    disc_gate: str,
) -> tuple[PyTree, PyTree, dict[str, jax.Array]]:
    """D's update on steps with `step % disc.every == 0`, inside shard_map.

    Args:
      disc_config: `config.disc`.
      real: z_enc (B, N, D); fake: sg(h_den) (B, N, D), this device's examples.
      disc_gate: "cond" or "mask", see `make_train_step`.
    Returns: D's variables, its optimizer state, and L_D with D's accuracies (computed with the
      pre-update D on every step, so the logs are comparable across steps).
    """
    bn_train = disc_config.bn_mode == "train"

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

    update = state.step % disc_config.every == 0
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
        if aligned(config.loss):
            z_enc = encoder_targets(encoder_features, encoder_params, batch["image"])
            inputs["z_enc"] = z_enc
        gamma = adversarial_weight(state.step, config.loss)

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
        if adversarial(config.loss):
            disc, disc_opt_state, disc_metrics = discriminator_step(
                state, z_enc, lax.stop_gradient(h_den), models, config.disc, disc_tx, disc_gate
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
