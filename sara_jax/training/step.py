"""One SARA training step (paper Eq. 11), data-parallel with `jax.shard_map`.

Each device holds a slice of the global batch and the TrainState laid out as
`train.state_sharding` says (`training.sharding`): whole on every device ("replicated"), or
with its optimizer states and EMA ("weight_update") and its parameters ("fsdp") split over the
devices. Gradients of the local losses are averaged over the devices (all-reduced, or
reduce-scattered onto the slices each device updates), so every layout applies the same
update. All randomness of an example is drawn from (seed, step, global example index): the
result does not depend on how many devices share the batch. The denoising objective is the
model family's (`make_objective`): SiT's velocity loss or DiT's DDPM hybrid loss; the alignment
terms are the same for both.
"""

import functools
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
    alignment_targets,
    disc_objective,
    encoder_targets,
    generator_loss,
)
from sara_jax.training import sharding
from sara_jax.training.sharding import AXIS
from sara_jax.training.state import Models, TrainState, make_optimizer

PyTree = Any


def accumulated_gradients(
    params: PyTree,
    disc: PyTree,
    inputs: Batch,
    models: Models,
    config: ml_collections.ConfigDict,
    gamma: jax.Array,
    whole: Callable[[PyTree], PyTree] = lambda params: params,
) -> tuple[jax.Array, dict[str, jax.Array], jax.Array, PyTree]:
    """Gradient of `generator_loss` over the local batch, in `train.grad_accum_steps` pieces.

    The loss is a mean over examples, so the mean over equal micro-batches is the full-batch
    value; only one micro-batch's activations are alive at a time.
    Args:
      whole: maps `params` to those the forward pass reads (under "fsdp", gathers the slices
        the SiT's blocks do not gather themselves), differentiated through.
    Returns: total loss, its terms, h_den (B, N, D) of the whole local batch (None without
      alignment), gradients.
    """
    grad_fn = jax.value_and_grad(lambda p, *args: generator_loss(whole(p), *args), has_aux=True)
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
    disc_gate: str,
    update_specs: PyTree,
) -> tuple[PyTree, PyTree, dict[str, jax.Array]]:
    """D's update on steps with `step % disc.every == 0`, inside shard_map.

    Args:
      disc_config: `config.disc`.
      real: z_enc (B, N, D), normalised as the alignment terms take it
        (`sara.alignment_targets`); fake: sg(h_den) (B, N, D), this device's examples.
      disc_gate: "cond" or "mask", see `make_train_step`.
      update_specs: the layout of D's optimizer state over its params (`sharding.tree_specs`);
        D's params themselves are replicated in every layout.
    Returns: D's variables, its optimizer state, and L_D with D's accuracies (computed with the
      pre-update D on every step, so the logs are comparable across steps).
    """
    bn_train = disc_config.bn_mode == "train"

    def update_disc(_):
        d_params = lax.pcast(state.disc["params"], AXIS, to="varying")
        (loss, (stats, accuracy)), d_grads = jax.value_and_grad(disc_objective, has_aux=True)(
            d_params, state.disc["batch_stats"], real, fake, models, bn_train
        )
        d_params, d_opt_state, _, _ = apply_update(
            disc_config.optim, d_grads, state.disc_opt_state, state.disc["params"], update_specs
        )
        disc = {"params": d_params, "batch_stats": stats}
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


def apply_update(
    optim: ml_collections.ConfigDict,
    grads: PyTree,
    opt_state: PyTree,
    params: PyTree,
    update_specs: PyTree,
    scattered: bool = False,
    params_sharded: bool = False,
) -> tuple[PyTree, PyTree, PyTree, jax.Array]:
    """Averages per-device `grads` over `data` and applies clipping and AdamW, inside shard_map.

    Each device updates the slice of every leaf that `update_specs` gives it (all of it where
    the spec is P(), as under "replicated"): the optimizer state holds those slices, the
    gradient is reduce-scattered onto them and the clipping reads the norm of the whole
    gradient.
    Args:
      optim: the optimizer's config section (`make_optimizer`).
      params: whole (replicated) leaves, or with `params_sharded` this device's slices.
      scattered: the sharded leaves of `grads` are reduce-scattered sums already (fsdp).
    Returns: the new params in the layout they came in (slices gathered back into whole
      leaves unless `params_sharded`), the new optimizer state, this device's slices of the
      new params (laid out as `update_specs`), and the averaged gradient's global norm (before
      clipping).
    """
    grads = sharding.reduce_gradients(grads, update_specs, scattered)
    norm = lambda tree: sharding.global_norm(tree, update_specs)  # noqa: E731
    if all(s == P() for s in jax.tree.leaves(update_specs, is_leaf=sharding.is_spec)):
        norm = optax.tree.norm  # Whole leaves: no collective.
    slices = params if params_sharded else sharding.local_slice(params, update_specs)
    updates, opt_state = make_optimizer(optim, norm).update(grads, opt_state, slices)
    slices = optax.apply_updates(slices, updates)
    new_params = slices if params_sharded else sharding.gather(slices, update_specs)
    return new_params, opt_state, slices, norm(grads)


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
      mesh: a mesh with a `data` axis; `batch` is sharded over it, `encoder_params` replicated,
        the state laid out as `config.train.state_sharding` says (`sharding.state_shardings`;
        a state in another layout is moved to it on the way in).
      disc_gate: how the every-`disc.every`-steps D update is gated: "cond" (lax.cond, only the
        taken branch runs) or "mask" (computed every step, applied with a select). None picks
        "mask" for a CPU mesh, where XLA runs the convolutions inside a conditional some 50x slower,
        and "cond" elsewhere. Both give the same result.
    The state argument is donated. Metrics are global-batch averages (float32 scalars).
    """
    mode = config.train.state_sharding
    num_devices = mesh.devices.size
    objective = make_objective(config)
    decay = config.train.ema_decay
    if disc_gate is None:
        disc_gate = "mask" if mesh.devices.flat[0].platform == "cpu" else "cond"
    if disc_gate not in ("cond", "mask"):
        raise ValueError(f"disc_gate must be 'cond' or 'mask', got {disc_gate!r}")

    def local_step(state: TrainState, batch: Batch, encoder_params: PyTree, specs: TrainState):
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

        # Differentiate w.r.t. per-device params so the gradient is the local one; apply_update
        # then averages it over the global batch. Under fsdp the sharded leaves are gathered
        # for the forward pass (the SiT's blocks one at a time, the rest here).
        fsdp = mode == "fsdp"
        step_models, whole = models, lambda params: params
        if fsdp:
            step_models, whole = fsdp_forward(models, specs.params)
        total, terms, h_den, grads = accumulated_gradients(
            sharding.per_device(state.params, specs.params),
            state.disc,
            inputs,
            step_models,
            config,
            gamma,
            whole,
        )
        # The EMA is laid out as each device's slice of the update (all of it if replicated).
        params, opt_state, slices, grad_norm = apply_update(
            config.optim,
            grads,
            state.opt_state,
            state.params,
            specs.ema_params,
            scattered=fsdp,
            params_sharded=fsdp,
        )
        ema_params = jax.tree.map(
            lambda e, p: decay * e + (1 - decay) * p, state.ema_params, slices
        )

        # Without L_adv, D and its optimizer state stay as initialised (and cost nothing).
        disc, disc_opt_state, disc_metrics = state.disc, state.disc_opt_state, {}
        if adversarial(config.loss):
            # D's params are whole on every device (their local shapes are the global ones).
            disc_update_specs = sharding.tree_specs(
                state.disc["params"], num_devices, mode != "replicated"
            )
            disc, disc_opt_state, disc_metrics = discriminator_step(
                state,
                # D's real tokens: the targets of the other terms, normalised or not with them.
                alignment_targets(z_enc, config.loss)[1],
                lax.stop_gradient(h_den),
                models,
                config.disc,
                disc_gate,
                disc_update_specs,
            )
        metrics = {"loss": total, **terms, **disc_metrics}
        metrics = {**lax.pmean(metrics, AXIS), "grad_norm": grad_norm}
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

    def step(state: TrainState, batch: Batch, encoder_params: PyTree):
        # The layout is a function of the state's global shapes, known when the step is traced.
        specs = sharding.state_specs(state, mode, num_devices)
        return jax.shard_map(
            functools.partial(local_step, specs=specs),
            mesh=mesh,
            in_specs=(specs, P(AXIS), P()),
            out_specs=(specs, P()),
        )(state, batch, encoder_params)

    return jax.jit(step, donate_argnums=(0,))


def fsdp_forward(models: Models, param_specs: PyTree) -> tuple[Models, Callable[[PyTree], PyTree]]:
    """The modules and the `whole` map of an fsdp step (`accumulated_gradients`).

    The SiT gathers each block's params itself, in its compute dtype, just before the block
    runs (and again in the backward pass: `models.sit.fsdp_saveable`); `whole` gathers the others
    (embeddings, final layer, projector: about 2% of XL/2's) once per forward pass, in float32.
    """
    sit_specs = param_specs["sit"]
    blocks = [name for name in sit_specs if name.startswith("blocks_")]
    block_specs = sit_specs[blocks[0]]  # Every block has the same shapes, hence layout.
    sit = models.sit.clone(
        gather=functools.partial(
            sharding.gather_for_compute, specs=block_specs, dtype=models.sit.dtype
        )
    )
    unblocked = {
        **param_specs,
        "sit": {
            name: jax.tree.map(lambda _: P(), spec, is_leaf=sharding.is_spec)
            if name in blocks
            else spec
            for name, spec in sit_specs.items()
        },
    }
    return models._replace(sit=sit), functools.partial(sharding.gather_for_compute, specs=unblocked)
