"""The training loop: data, encoder, state, the jitted step, logging, checkpoints, samples.

Read top to bottom: everything a run does happens in `train_and_evaluate`.
"""

from pathlib import Path

import grain
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from clu import metric_writers, periodic_actions
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from sara_jax import images, sampling
from sara_jax.config import flat_items, validate
from sara_jax.data.pipeline import make_source, make_train_iterator
from sara_jax.encoders import load_encoder
from sara_jax.models.sit import SiT
from sara_jax.train_state import TrainState, build_models, create_train_state
from sara_jax.train_step import AXIS, data_mesh, make_train_step


def sample_grid(
    config: ml_collections.ConfigDict, sit: SiT, params: dict, key: jax.Array
) -> np.ndarray:
    """Class-conditional samples with the Euler ODE sampler, one row per shown class.

    Returns: uint8 (classes, per_class, H, W, 3).
    """
    s, m = config.sample, config.model
    rows = min(s.num_classes_shown, m.num_classes)
    classes = np.linspace(0, m.num_classes - 1, rows).round().astype(np.int32)
    labels = jnp.repeat(jnp.asarray(classes), s.per_class)
    noise = jax.random.normal(key, (labels.shape[0], m.input_size, m.input_size, m.in_channels))

    def velocity(x, t, y):
        return sit.apply({"params": params}, x, t, y)[0]

    guided = sampling.guided_velocity(velocity, m.num_classes, s.cfg_scale)
    run = jax.jit(lambda noise, labels: sampling.euler_ode(guided, noise, labels, s.num_steps))
    x = np.asarray(run(noise, labels))
    return images.to_uint8(x).reshape(rows, s.per_class, *x.shape[1:])


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> TrainState:
    """Trains (resuming from the latest checkpoint in workdir) and writes a sample grid."""
    validate(config, num_devices=jax.device_count())
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    mesh = data_mesh()
    replicated = NamedSharding(mesh, P())
    batch_sharding = NamedSharding(mesh, P(AXIS))

    source = make_source(config.data)
    encoder = load_encoder(config, source)
    models = build_models(config, encoder.z_dim)
    state = jax.jit(
        lambda key: create_train_state(config, models, encoder.num_tokens, key),
        out_shardings=replicated,
    )(jax.random.key(config.seed))
    encoder_params = jax.device_put(encoder.params, replicated)
    iterator = make_train_iterator(
        source,
        global_batch_size=config.data.global_batch_size,
        seed=config.seed,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
        num_workers=config.data.num_workers,
    )

    manager = ocp.CheckpointManager(
        (workdir / "checkpoints").absolute(),
        options=ocp.CheckpointManagerOptions(max_to_keep=config.train.keep_checkpoints),
    )
    if manager.latest_step() is not None:
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
        restored = manager.restore(
            manager.latest_step(),
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract),
                data=grain.checkpoint.CheckpointRestore(iterator),
            ),
        )
        state = restored.state
        logging.info("resumed from step %d", int(state.step))

    writer = metric_writers.create_default_writer(workdir, just_logging=jax.process_index() > 0)
    writer.write_hparams(dict(flat_items(config)))
    report = periodic_actions.ReportProgress(num_train_steps=config.train.num_steps, writer=writer)
    train_step = make_train_step(config, models, encoder.features, mesh)

    history = []
    for step in range(int(state.step), config.train.num_steps):
        local = next(iterator)
        batch = {
            k: jax.make_array_from_process_local_data(batch_sharding, v) for k, v in local.items()
        }
        with jax.profiler.StepTraceAnnotation("train", step_num=step):
            state, metrics = train_step(state, batch, encoder_params)
        history.append(metrics)
        done = step + 1
        report(done)
        if done % config.train.log_every == 0 or done == config.train.num_steps:
            summary = {k: float(np.mean([m[k] for m in jax.device_get(history)])) for k in metrics}
            writer.write_scalars(done, summary)
            history = []
        if done % config.train.checkpoint_every == 0 or done == config.train.num_steps:
            manager.save(
                done,
                args=ocp.args.Composite(
                    state=ocp.args.StandardSave(state),
                    data=grain.checkpoint.CheckpointSave(iterator),
                ),
            )
    manager.wait_until_finished()

    if config.data.space == "pixel":
        params = state.ema_params if config.sample.use_ema else state.params
        key = jax.random.fold_in(jax.random.key(config.seed), 1)
        grid = sample_grid(config, models.sit, params["sit"], key)
        if jax.process_index() == 0:
            images.save_grid(grid, workdir / "samples.png")
            logging.info("wrote %s", workdir / "samples.png")
    else:
        logging.warning("no sample grid: decoding latents needs the SD-VAE, not available yet")
    writer.flush()
    return state
