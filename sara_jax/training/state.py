"""The one TrainState of a SARA run and the modules and optimizers it is built from."""

from collections.abc import Callable
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import optax
import orbax.checkpoint as ocp
from jax import lax

from sara_jax.encoders.registry import encoder_width
from sara_jax.io import files
from sara_jax.io.errors import MissingInput
from sara_jax.models.discriminator import Discriminator
from sara_jax.models.dtype import dtype_of
from sara_jax.models.projector import make_projector
from sara_jax.models.sit import SiT
from sara_jax.models.trained import Models
from sara_jax.training import checkpoints

PyTree = Any


@flax.struct.dataclass
class TrainState:
    """Everything that changes during training, laid out over the `data` mesh axis as
    `train.state_sharding` says (`training.sharding`): the global arrays are the same in every
    layout, so are the checkpoints.

    step: int32 scalar, the number of generator updates done.
    params / ema_params: {"sit": ..., "projector": ...}, float32.
    disc: {"params": ..., "batch_stats": ...} of the discriminator, float32.
    opt_state / disc_opt_state: optax states of params and disc["params"].
    """

    step: jax.Array
    params: PyTree
    ema_params: PyTree
    disc: PyTree
    opt_state: PyTree
    disc_opt_state: PyTree


def build_models(config: ml_collections.ConfigDict, z_dim: int) -> Models:
    """The SiT (or DiT), projector and discriminator a config describes; z_dim is the encoder's
    width."""
    m = config.model
    dtype = dtype_of(m.compute_dtype)
    sit = SiT(
        input_size=m.input_size,
        in_channels=m.in_channels,
        patch_size=m.patch_size,
        hidden_size=m.hidden_size,
        depth=m.depth,
        num_heads=m.num_heads,
        num_classes=m.num_classes,
        encoder_depth=m.encoder_depth,
        mlp_ratio=m.mlp_ratio,
        dtype=dtype,
        remat=m.remat,
        # DiT predicts eps and the variance interpolation: twice the input channels.
        learn_sigma=m.family == "dit",
    )
    projector = make_projector(config.projector, z_dim, dtype)
    # Train-mode BatchNorm averages its batch statistics over the data axis, so the result does
    # not depend on how the batch is split across devices.
    disc = Discriminator(use_maxpool=config.disc.use_maxpool, axis_name="data", dtype=dtype)
    return Models(sit, projector, disc)


def clip_by_global_norm(
    max_norm: float, norm: Callable[[PyTree], jax.Array]
) -> optax.GradientTransformation:
    """optax.clip_by_global_norm (same state, same arithmetic) with the norm as an argument:
    optax's reads the leaves it is given, which under a sharded state are a device's slices,
    not the whole gradient (`sharding.global_norm` adds them up over the devices)."""

    def update(updates: PyTree, state: optax.EmptyState, params: PyTree = None):
        del params
        g_norm = norm(updates)
        small = g_norm < max_norm
        clipped = jax.tree.map(
            lambda t: lax.select(small, t, (t / g_norm.astype(t.dtype)) * max_norm), updates
        )
        return clipped, state

    return optax.GradientTransformation(optax.init_empty_state, update)


def make_optimizer(
    optim: ml_collections.ConfigDict, norm: Callable[[PyTree], jax.Array] = optax.tree.norm
) -> optax.GradientTransformation:
    """Global-norm clipping then AdamW with a constant learning rate.

    norm: the global norm of a gradient as the optimizer receives it (see
      `clip_by_global_norm`); the default reads whole leaves.
    """
    return optax.chain(
        clip_by_global_norm(optim.grad_clip, norm),
        optax.adamw(
            optim.lr, b1=optim.b1, b2=optim.b2, eps=optim.eps, weight_decay=optim.weight_decay
        ),
    )


def create_train_state(
    config: ml_collections.ConfigDict, models: Models, num_tokens: int, key: jax.Array
) -> TrainState:
    """Initialises all parameters (EMA = initial params) and both optimizer states.

    Args:
      num_tokens: N, the token count shared by the SiT and the encoder.
      key: PRNG key for initialisation.
    """
    m = config.model
    k_sit, k_proj, k_disc = jax.random.split(key, 3)
    x = jnp.zeros((1, m.input_size, m.input_size, m.in_channels), jnp.float32)
    sit_params = models.sit.init(k_sit, x, jnp.zeros((1,)), jnp.zeros((1,), jnp.int32))["params"]
    hidden = jnp.zeros((1, num_tokens, m.hidden_size), jnp.float32)
    proj_params = models.projector.init(k_proj, hidden)["params"]
    tokens = jnp.zeros((1, num_tokens, models.projector.z_dim), jnp.float32)
    disc = dict(models.disc.init(k_disc, tokens, train=False))
    params = {"sit": sit_params, "projector": proj_params}
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        ema_params=jax.tree.map(jnp.copy, params),
        disc=disc,
        opt_state=make_optimizer(config.optim).init(params),
        disc_opt_state=make_optimizer(config.disc.optim).init(disc["params"]),
    )


def config_train_state(config: ml_collections.ConfigDict, key: jax.Array) -> TrainState:
    """`create_train_state` from the config alone: its models at the registered encoder's width,
    N from the SiT's patch grid (what the encoder's tokens must match)."""
    models = build_models(config, encoder_width(config.encoder))
    num_tokens = (config.model.input_size // config.model.patch_size) ** 2
    return create_train_state(config, models, num_tokens, key)


def restore_params(
    config: ml_collections.ConfigDict, workdir: str, ema: bool, step: int | None = None
) -> tuple[PyTree, int]:
    """{"sit", "projector"} params (the EMA ones if `ema`) of workdir's newest good checkpoint
    (`checkpoints.restore_good`), or of checkpoint `step` if given, and its step."""
    directory = files.resolve(workdir) / "checkpoints"
    # Restored onto this process's first device, whatever mesh saved it: a sampling job may run
    # on another topology than the training run did.
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    abstract = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device),
        jax.eval_shape(lambda: config_train_state(config, jax.random.key(0))),
    )
    # CheckpointManager would create a missing directory; a wrong --workdir must not.
    found = None
    if directory.is_dir():
        found = checkpoints.restore_good(ocp.CheckpointManager(directory), abstract, step=step)
    if found is None:
        raise MissingInput(f"--workdir={workdir!r}: no checkpoint under {directory}")
    restored_step, restored = found
    return (restored.state.ema_params if ema else restored.state.params), restored_step
