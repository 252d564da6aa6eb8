"""Evaluation sample sets: sample i is a function of (sample.seed, i) and the params alone.

Its label (uniform or i % classes), its noise and its sampler noise are keyed by i, so a set cut
into chunks of `sample.batch_size` and drawn by any number of processes, devices or restarts is
the same set. `python -m sara_jax.sample` and the in-training FID both draw with it.

Preemption (`io/preemption`): every chunk already saved is kept and a rerun draws only the
missing ones. With one process SIGTERM abandons the chunk being drawn (its device computation
is not waited for). With several, JAX's runtime owns SIGTERM and the stop must be agreed at a
point every process passes in the same order; chunks are therefore drawn in rounds (in round r
process p draws chunk r * P + p if it is missing) and the sync point is consulted after each
round, on every process, whatever it had to draw. All processes then stop after the same round,
each after finishing the chunk it is drawing. Processes whose chunks were mostly saved before
run ahead and may have left already: the sync then fails after the runtime's barrier timeout
(minutes) and the others, held at that round, are ended by the scheduler's kill. Either way the
saved chunks stay and a rerun continues.
"""

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import tqdm
from absl import logging
from etils import epath
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from sara_jax.encoders.registry import encoder_width
from sara_jax.io import files, preemption
from sara_jax.sampling import denoiser
from sara_jax.sampling.decode import latent_decoder
from sara_jax.training.state import build_models, restore_params

PyTree = Any


def sample_labels(config: ml_collections.ConfigDict, indices: np.ndarray) -> jax.Array:
    """Labels of samples `indices`: uniform draws keyed by (seed, i), or i % num_classes."""
    s, num_classes = config.sample, config.model.num_classes
    if s.labels == "balanced":
        return jnp.asarray(indices % num_classes, jnp.int32)
    key = jax.random.fold_in(jax.random.key(s.seed), 0)
    draw = jax.vmap(lambda i: jax.random.randint(jax.random.fold_in(key, i), (), 0, num_classes))
    return draw(jnp.asarray(indices))


class ChunkSampler(NamedTuple):
    """Draws samples data parallel over this process's devices.

    place: SiT params (host or global arrays) -> a replica on this process's devices.
    draw: (placed params, indices (B,), saved=None) -> (uint8 images (B, S, S, 3), labels (B,)).
      Given `saved`, SIGTERM abandons the drawing with `preemption.Preempted(saved)` (one
      process; `preemption.wait`); without, the drawing runs to its end.
    """

    place: Callable[[PyTree], PyTree]
    draw: Callable[..., tuple[np.ndarray, np.ndarray]]


def make_chunk_sampler(
    config: ml_collections.ConfigDict, num_steps: int | None = None
) -> ChunkSampler:
    """Sample i is a function of (sample.seed, i) and the params alone; `num_steps` overrides
    `sample.num_steps`. Latents are decoded by `config.vae.decode_checkpoint`."""
    s, m = config.sample, config.model
    models = build_models(config, encoder_width(config.encoder))
    mesh = jax.sharding.Mesh(np.array(jax.local_devices()), ("data",))
    rows, replicated = NamedSharding(mesh, P("data")), NamedSharding(mesh, P())
    decoder = latent_decoder(config)
    vae_params = None if decoder is None else jax.device_put(decoder.params, replicated)

    noise_key = jax.random.fold_in(jax.random.key(s.seed), 1)
    denoise = denoiser.make_denoiser(config, models.sit, num_steps)

    def one_sample(params: PyTree, index: jax.Array, label: jax.Array) -> jax.Array:
        key = jax.random.fold_in(noise_key, index)
        noise = jax.random.normal(key, (1, m.input_size, m.input_size, m.in_channels))
        return denoise(params, noise, label[None], jax.random.fold_in(key, 1))[0]

    @jax.jit
    def chunk(
        params: PyTree, vae_params: PyTree | None, indices: jax.Array, labels: jax.Array
    ) -> jax.Array:
        # One sample per index, batched: each sample's randomness is its own.
        x = jax.vmap(one_sample, in_axes=(None, 0, 0))(params, indices, labels)
        if decoder is not None:
            x = decoder.decode(vae_params, x)
        return jnp.clip(jnp.round((x + 1.0) * 127.5), 0, 255).astype(jnp.uint8)

    def place(params: PyTree) -> PyTree:
        # A replicated array of a multi-host mesh is not addressable as a whole; its local
        # copy is.
        def local(x):
            if isinstance(x, jax.Array) and not x.is_fully_addressable:
                x = x.addressable_data(0)
            return jax.device_put(x, replicated)

        return jax.tree.map(local, params)

    def draw(
        params: PyTree, indices: np.ndarray, saved: str | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        labels = sample_labels(config, indices)
        padded = np.resize(indices, s.batch_size)  # One compiled shape for the last chunk.
        out = chunk(
            params,
            vae_params,
            jax.device_put(padded, rows),
            jax.device_put(np.resize(np.asarray(labels), s.batch_size), rows),
        )
        if saved is not None:
            out = preemption.wait(out, saved)
        return np.asarray(out)[: len(indices)], np.asarray(labels)

    return ChunkSampler(place, draw)


def _chunk_path(out: epath.Path, c: int) -> epath.Path:
    return out / f"chunk_{c:06d}.npz"


def sample_set(
    config: ml_collections.ConfigDict, workdir: str, process_index: int, process_count: int
) -> epath.Path | None:
    """Draws this process's missing chunks; returns samples.npz once every chunk exists.

    Raises `preemption.Preempted` at a safe point after SIGTERM (see the module docstring),
    with every chunk drawn so far saved.
    """
    s = config.sample
    if s.batch_size % jax.local_device_count():
        raise ValueError(
            f"config.sample.batch_size={s.batch_size} must be divisible by the "
            f"{jax.local_device_count()} local devices"
        )
    params, step = restore_params(config, workdir, config.sample.use_ema)
    out = files.resolve(workdir) / f"samples_{step}"
    out.mkdir(parents=True, exist_ok=True)
    num_chunks = -(-s.num_samples // s.batch_size)
    # Round r's chunk of this process is r * P + p; the last round may have none.
    rounds = [r * process_count + process_index for r in range(-(-num_chunks // process_count))]
    mine = [c for c in rounds if c < num_chunks]
    todo = {c for c in mine if not _chunk_path(out, c).exists()}
    saved = len(mine) - len(todo)
    logging.info("step %d: %d chunks, %d of mine to draw", step, num_chunks, len(todo))

    def kept() -> str:
        whose = "" if process_count == 1 else f" of process {process_index}"
        return f"{saved} of the {len(mine)} chunks{whose} saved in {out}"

    preemption.check(kept())  # Restoring a large checkpoint takes a while.
    if todo:
        sampler = make_chunk_sampler(config)
        sit_params = sampler.place(params["sit"])
    with tqdm.tqdm(total=len(todo) * s.batch_size, unit="img") as progress:
        for c in rounds:
            if c in todo:
                indices = np.arange(c * s.batch_size, min((c + 1) * s.batch_size, s.num_samples))
                samples, labels = sampler.draw(sit_params, indices, saved=kept())
                files.write_npz(_chunk_path(out, c), arr_0=samples, arr_1=labels)
                saved += 1
                progress.update(len(indices))
            preemption.check(kept())
    if not all(_chunk_path(out, c).exists() for c in range(num_chunks)):
        logging.info("other processes' chunks are still being drawn")
        return None
    chunks = [files.read_npz(_chunk_path(out, c)) for c in range(num_chunks)]
    samples = np.concatenate([c["arr_0"] for c in chunks])
    labels = np.concatenate([c["arr_1"] for c in chunks])
    files.write_npz(out / "samples.npz", arr_0=samples, arr_1=labels)
    grid = samples[:64]
    side = int(np.sqrt(len(grid)))
    files.save_grid(grid[: side * side].reshape(side, side, *grid.shape[1:]), out / "grid.png")
    logging.info("wrote %d samples to %s", len(samples), out / "samples.npz")
    return out / "samples.npz"
