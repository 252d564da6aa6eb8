"""The training loop: data, encoder, state, the jitted step, logging, checkpoints, samples.

Read top to bottom: everything a run does happens in `train_and_evaluate`.
"""

import json
import time

import grain
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from clu import parameter_overview
from etils import epath
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from sara_jax.config import describe, flat_items, validate
from sara_jax.converters.resnet import pretrained_discriminator
from sara_jax.data.pipeline import make_source, make_train_iterator
from sara_jax.encoders.load import load_encoder
from sara_jax.evaluation import in_training
from sara_jax.io import files, preemption, tensorboard
from sara_jax.io.environment import environment
from sara_jax.io.errors import InputError
from sara_jax.models.sit import SiT
from sara_jax.sampling import denoiser
from sara_jax.sampling.decode import latent_decoder
from sara_jax.training import checkpoints
from sara_jax.training.progress import Progress
from sara_jax.training.sharding import AXIS, bytes_per_device, data_mesh, state_shardings
from sara_jax.training.state import TrainState, build_models, create_train_state
from sara_jax.training.step import make_train_step


def make_sampler(config: ml_collections.ConfigDict, sit: SiT):
    """A `(params, key) -> uint8 (classes, per_class, H, W, 3)` preview-grid sampler: latents
    are decoded by the SD-VAE (`config.vae.decode_checkpoint`).

    Classes are spread evenly over the label range; `config.sample`'s sampler and guidance.
    SIGTERM abandons a grid being drawn (`preemption.wait`).
    """
    s, m = config.sample, config.model
    rows = min(s.num_classes_shown, m.num_classes)
    classes = np.linspace(0, m.num_classes - 1, rows).round().astype(np.int32)
    labels = jnp.repeat(jnp.asarray(classes), s.per_class)
    denoise = denoiser.make_denoiser(config, sit)
    decoder = latent_decoder(config)

    @jax.jit
    def sample(params: dict, vae_params: dict | None, key: jax.Array) -> jax.Array:
        shape = (labels.shape[0], m.input_size, m.input_size, m.in_channels)
        noise = jax.random.normal(key, shape)
        x = denoise(params, noise, labels, jax.random.fold_in(key, 1))
        return x if decoder is None else decoder.decode(vae_params, x)

    def grid(params: dict, key: jax.Array) -> np.ndarray:
        x = sample(params, None if decoder is None else decoder.params, key)
        x = np.asarray(preemption.wait(x, "the preview grid was not drawn"))
        return files.to_uint8(x).reshape(rows, s.per_class, *x.shape[1:])

    return grid


def initial_disc(config: ml_collections.ConfigDict, disc: dict) -> dict:
    """D's variables as a fresh run starts them: `disc` (as initialised) with the ImageNet trunk
    of `config.disc.checkpoint` when it names one; its 1x1 stem and logit head stay as
    initialised."""
    if not config.disc.checkpoint:
        return disc
    return pretrained_discriminator(
        jax.device_get(disc), config.disc.checkpoint, "config.disc.checkpoint"
    )


def check_finite(metrics: dict, step: int, mode: str) -> None:
    """Raises (mode "stop") or warns (mode "skip") when the step's update was not applied."""
    if metrics["nonfinite"] == 0:
        return
    bad = sorted(k for k, v in metrics.items() if not np.isfinite(v))
    message = (
        f"step {step}: non-finite {', '.join(bad)}; the update was not applied "
        f"(train.nonfinite={mode!r})"
    )
    if mode == "stop":
        raise FloatingPointError(message)
    logging.warning(message)


def record_environment(path: epath.Path, step: int) -> None:
    """Appends this process's machine and versions (`io.environment`), from `step` on, to the
    list at `path`: a run resumed elsewhere says where each of its parts ran."""
    starts = json.loads(path.read_text()) if path.exists() else []
    files.write_json(path, [*starts, {"from_step": step, **environment()}])


def train_and_evaluate(
    config: ml_collections.ConfigDict, workdir: str, start_afresh: bool = False
) -> TrainState:
    """Trains (resuming from the latest checkpoint in workdir) and writes sample grids.

    A workdir that holds a previous run (`checkpoints.RUN_TRACES`) but no checkpoint step, as
    after every step of it was found corrupt and moved aside, is refused with an InputError
    before anything is built, unless `start_afresh`: a scheduler that restarts the job must not
    silently train from step 0 over a run that existed.
    """
    validate(config, num_devices=jax.device_count())
    workdir = files.resolve(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    if traces := checkpoints.previous_run_without_checkpoints(workdir):
        if not start_afresh:
            raise InputError(
                f"--workdir={workdir} holds a previous run ({', '.join(traces)}) but no "
                "checkpoint: restore its checkpoints (corrupt ones are in corrupt_checkpoints/), "
                "or pass --start_afresh to train from step 0 there, or use another --workdir"
            )
        logging.warning(
            "starting afresh from step 0 in %s over a previous run's %s (--start_afresh; "
            "kept, not deleted)",
            workdir,
            ", ".join(traces),
        )
    mesh = data_mesh()
    replicated = NamedSharding(mesh, P())
    batch_sharding = NamedSharding(mesh, P(AXIS))
    t = config.train

    source = make_source(config.data)
    encoder = load_encoder(config, source)
    models = build_models(config, encoder.z_dim)
    init = lambda key: create_train_state(config, models, encoder.num_tokens, key)  # noqa: E731
    layout = state_shardings(jax.eval_shape(init, jax.random.key(0)), t.state_sharding, mesh)
    # Created in place: under a sharded layout no device ever holds the whole state.
    state = jax.jit(init, out_shardings=layout)(jax.random.key(config.seed))
    local, whole = bytes_per_device(state)
    logging.info(
        "training state: %.2f GiB per device of %.2f GiB (train.state_sharding=%s, %d devices)",
        local / 2**30, whole / 2**30, t.state_sharding, mesh.devices.size,
    )  # fmt: skip
    # clu's per-array tables go to the log at -v 1 only (io/cli.quiet_logs); this line always.
    parameter_overview.log_parameter_overview(state.params, msg="SiT and projector")
    parameter_overview.log_parameter_overview(state.disc, msg="discriminator")
    counts = {
        "SiT": state.params["sit"],
        "projector": state.params["projector"],
        "discriminator": state.disc["params"],
    }
    logging.info(
        "parameters: %s",
        ", ".join(f"{k} {parameter_overview.count_parameters(v):,}" for k, v in counts.items()),
    )
    encoder_params = jax.device_put(encoder.params, replicated)
    iterator = make_train_iterator(
        source,
        global_batch_size=config.data.global_batch_size,
        seed=config.seed,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
        num_workers=config.data.num_workers,
    )

    # Orbax writes each checkpoint to a temporary directory and renames it when complete, so a
    # kill during a save leaves nothing that a restart would pick up.
    manager = ocp.CheckpointManager(
        workdir / "checkpoints",
        options=ocp.CheckpointManagerOptions(
            max_to_keep=t.keep_checkpoints, keep_period=t.keep_every or None
        ),
    )

    last_saved = None

    def save(step: int) -> None:
        nonlocal last_saved
        last_saved = step
        manager.save(
            step, args=checkpoints.save_args(state, data=grain.checkpoint.CheckpointSave(iterator))
        )

    def data_item(step_dir) -> dict:
        # A checkpoint converted from PyTorch (sara_jax.convert) has no iterator position.
        if (step_dir / "data").exists():
            return {"data": grain.checkpoint.CheckpointRestore(iterator)}
        return {}

    # The per-example randomness is a function of (seed, step, example index), so the state and
    # the iterator position are all a resume needs.
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
    found = checkpoints.restore_good(
        manager, abstract, data_item, move_bad_to=workdir / "corrupt_checkpoints"
    )
    if found is not None:
        latest, restored = found
        state = restored.state
        if latest >= t.num_steps:
            logging.info(
                "the run in %s is complete: step %d, train.num_steps=%d; nothing to do (raise "
                "--config.train.num_steps to train on)", workdir, latest, t.num_steps,
            )  # fmt: skip
            manager.close()
            return state
        logging.info("resumed from step %d", latest)
        if "data" not in restored:
            logging.info("step %d has no data-iterator state: the data order starts afresh", latest)
    else:
        state = state.replace(disc=jax.device_put(initial_disc(config, state.disc), replicated))

    if jax.process_index() == 0:
        files.write_text(workdir / "config.json", config.to_json_best_effort(indent=2))
        record_environment(workdir / "environment.json", int(state.step))
    logging.info("config: %s\nevery field: %s", describe(config), workdir / "config.json")
    writer = tensorboard.create_writer(workdir, just_logging=jax.process_index() > 0)
    writer.write_hparams(dict(flat_items(config)))
    progress = Progress(t.num_steps, config.data.global_batch_size)
    train_step = make_train_step(config, models, encoder.features, mesh)
    sample_grid = make_sampler(config, models.sit)
    sample_key = jax.random.fold_in(jax.random.key(config.seed), 1)
    # Building a monitor may train an evaluator: only when an evaluation falls in this run.
    evaluates = 0 < config.eval.every <= t.num_steps
    monitor = in_training.make_config_monitor(config) if evaluates else None
    structure = None
    if evaluates and config.eval.spatial_images:
        structure = in_training.make_structure_monitor(config, models, encoder, source)

    def sampled_params() -> dict:
        # Whole on every device, whatever the layout: the samplers are plain jit programs. A
        # jitted identity gathers across hosts as well.
        params = state.ema_params if config.sample.use_ema else state.params
        if t.state_sharding == "replicated":
            return params  # No copy.
        return jax.jit(lambda p: p, out_shardings=replicated)(params)

    def write_eval(step: int) -> str:
        params = sampled_params()
        start = time.perf_counter()
        results = monitor(params["sit"])
        seconds = {f"{next(iter(results))}_seconds": time.perf_counter() - start}
        measured = structure(params) if structure is not None else {}
        writer.write_scalars(step, {**results, **seconds, **measured})
        shown = ", ".join(f"{k} {v:.4f}" for k, v in results.items())
        shown = f"step {step}: {shown} ({config.eval.num_samples} samples)"
        logging.info("%s", shown)
        return shown

    def write_samples(step: int) -> None:
        params = sampled_params()
        grid = sample_grid(params["sit"], sample_key)
        rows, cols, h, w, c = grid.shape
        tiled = grid.transpose(0, 2, 1, 3, 4).reshape(1, rows * h, cols * w, c)
        writer.write_images(step, {"samples": tiled})
        if jax.process_index() == 0:
            files.save_grid(grid, workdir / "samples.png")
            logging.info("step %d: wrote %s", step, workdir / "samples.png")

    def stop(done: int, unfinished: str) -> preemption.Preempted:
        """Saves step `done` unless saved (checked first), for a Preempted that says so."""
        if last_saved != done:
            if previous is not None:
                check_finite(jax.device_get(previous), done - 1, t.nonfinite)
            save(done)
        manager.wait_until_finished()
        return preemption.Preempted(f"saved step {done}{unfinished}")

    history, previous, window_start = [], None, time.perf_counter()
    evaluations = []  # Repeated at the end, so a run's last lines say how good it is.
    first = int(state.step)
    logging.info("compiling the training step (its first call) ...")
    try:
        for step in range(first, t.num_steps):
            local = next(iterator)
            batch = {
                k: jax.make_array_from_process_local_data(batch_sharding, v)
                for k, v in local.items()
            }
            with jax.profiler.StepTraceAnnotation("train", step_num=step):
                state, metrics = train_step(state, batch, encoder_params)
            if step == first:
                jax.block_until_ready(metrics)
                logging.info(
                    "compiled; the first step took %.1f s", time.perf_counter() - window_start
                )
            # Checking the previous step keeps one step in flight while the host waits.
            if previous is not None:
                check_finite(jax.device_get(previous), step - 1, t.nonfinite)
            previous = metrics
            history.append(metrics)
            done = step + 1
            if line := progress.update(done):
                logging.info("%s", line)
            if done % t.log_every == 0 or done == t.num_steps:
                summary = {
                    k: float(np.mean([m[k] for m in jax.device_get(history)])) for k in metrics
                }
                seconds = (time.perf_counter() - window_start) / len(history)
                summary |= {
                    "learning_rate": config.optim.lr,
                    "step_time": seconds,
                    "images_per_sec": config.data.global_batch_size / seconds,
                }
                writer.write_scalars(done, summary)
                history, window_start = [], time.perf_counter()
            preempted = preemption.requested()
            if preempted or done % t.checkpoint_every == 0 or done == t.num_steps:
                # Never save past an unchecked step; once checked, it is not checked again.
                check_finite(jax.device_get(previous), step, t.nonfinite)
                previous = None
                save(done)
            if preempted:
                raise stop(done, "")
            paused = time.perf_counter()
            try:
                if t.sample_every and done % t.sample_every == 0 and done != t.num_steps:
                    write_samples(done)
                if monitor is not None and done % config.eval.every == 0:
                    evaluations.append(write_eval(done))
            except preemption.Preempted as during:
                raise stop(done, f"; {during}") from None
            # Step times and the ETA exclude the evaluations.
            window_start += time.perf_counter() - paused
            progress.pause(time.perf_counter() - paused)
        manager.wait_until_finished()
        try:
            write_samples(t.num_steps)
        except preemption.Preempted:
            raise stop(t.num_steps, "; the final preview grid was not drawn") from None
    finally:
        manager.wait_until_finished()
        manager.close()
        writer.close()
    for line in evaluations:
        logging.info("evaluation at %s", line)
    return state
