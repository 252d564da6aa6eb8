"""Evaluation sample sets: sample i is a function of (sample.seed, i) and the params alone.

Its label (uniform or i % classes), its noise and its sampler noise are keyed by i, so a set
drawn in any batches, by any number of processes, devices or restarts is the same set.
`python -m sara_jax.sample` and the in-training FID both draw with it.

A set is what its settings say (`set_settings`: the checkpoint step and weights, the sampler,
the seed and labels, the image size, the decoder, the architecture). Its directory is named
after them (`set_name`) and its set.json records them, so a run with other settings draws
another set instead of continuing this one. How far it goes and how it was cut are not part of
it: sample.num_samples extends or cuts the same set, and the chunk files are named by the
indices they hold, so a run with another sample.batch_size draws exactly the indices no chunk
holds. The work of a run is a grid of cells of its sample.batch_size (cell c holds indices
[c B, (c + 1) B) below num_samples); process p of P owns cells p, p + P, ... and draws the
parts of them that no chunk holds, each part one chunk. Chunks are written whole (by a rename)
and only a cell's owner writes into it, so processes never draw an index twice, whenever each
of them listed the directory. samples.npz embeds the set's record (`read_record`).

Preemption (`io/preemption`): every chunk already saved is kept and a rerun draws only the
missing indices. With one process SIGTERM abandons the chunk being drawn (its device
computation is not waited for). With several, JAX's runtime owns SIGTERM and the stop must be
agreed at a point every process passes in the same order; cells are therefore drawn in rounds
(in round r process p draws what is missing of cell r * P + p) and the sync point is consulted
after each round, on every process, whatever it had to draw. All processes then stop after the
same round, each after finishing the cell it is drawing. Processes whose cells were mostly
saved before run ahead and may have left already: the sync then fails after the runtime's
barrier timeout (minutes) and the others, held at that round, are ended by the scheduler's
kill. Either way the saved chunks stay and a rerun continues.
"""

import hashlib
import json
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
from sara_jax.io.errors import InputError
from sara_jax.sampling import chunks, denoiser
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
    # Every chunk is padded to one width, a multiple of the devices: one compiled shape, and
    # any sample.batch_size on any device count (each sample is drawn on its own, so the
    # padding changes none of them).
    width = -(-s.batch_size // mesh.devices.size) * mesh.devices.size
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
        out = chunk(
            params,
            vae_params,
            jax.device_put(np.resize(indices, width), rows),
            jax.device_put(np.resize(np.asarray(labels), width), rows),
        )
        if saved is not None:
            out = preemption.wait(out, saved)
        return np.asarray(out)[: len(indices)], np.asarray(labels)

    return ChunkSampler(place, draw)


# The config fields that decide sample i in every set, beside the checkpoint's step; with "step",
# the settings every record holds. Not among them: sample.batch_size and num_samples (how the set
# is cut and how far it goes), the preview grid's per_class and num_classes_shown,
# model.encoder_depth (the hidden state it selects is not sampled from), model.remat and
# class_dropout (training only). `set_settings` adds the fields only some sets read.
SET_FIELDS = (
    "sample.use_ema",
    "sample.seed",
    "sample.labels",
    "sample.method",
    "sample.num_steps",
    "sample.cfg_scale",
    "model.family",
    "model.num_classes",
    "model.input_size",
    "model.in_channels",
    "model.patch_size",
    "model.depth",
    "model.hidden_size",
    "model.num_heads",
    "model.mlp_ratio",
    "model.compute_dtype",
    "data.image_size",
    "data.space",
)
SETTING_KEYS = ("step", *SET_FIELDS)

# What the record embedded in samples.npz (and written to set.json) holds: the set's directory
# name, its settings (SETTING_KEYS and more), the number of samples in that file, and the chunk
# files they were read from ({"file", "start", "stop", "batch_size"} each, in order).
RECORD_KEYS = ("set", "settings", "num_samples", "chunks")

_MISSING = object()


def _field(config: ml_collections.ConfigDict, name: str) -> Any:
    section, field = name.split(".")
    return config[section][field]


def set_settings(config: ml_collections.ConfigDict, step: int) -> dict[str, Any]:
    """The settings that define the sample set of `config` at checkpoint `step`:
    {"step": step, "<section>.<field>": value} with SET_FIELDS and the fields this set reads."""
    s, family = config.sample, config.model.family
    names = list(SET_FIELDS)
    if s.cfg_scale != 1.0:  # Scale 1 is no guidance: neither interval nor channels are read.
        dit = ["sample.ddpm_cfg_channels"]
        names += dit if family == "dit" else ["sample.guidance_low", "sample.guidance_high"]
    if family == "dit":
        names += ["diffusion.num_timesteps", "diffusion.beta_start", "diffusion.beta_end"]
    if config.data.space == "latent":
        names += ["vae.decode_checkpoint", "vae.compute_dtype", "data.latent_scale"]
    return {"step": int(step)} | {name: _field(config, name) for name in names}


def set_name(settings: dict[str, Any]) -> str:
    """The set's directory name: samples_<step>_<method><num_steps>_cfg<scale>[_raw]_<digest>,
    e.g. samples_400000_sde250_cfg1.8_1d54fe87. The digest (8 hex digits of the sha256 of the
    settings' canonical JSON) tells apart every setting; the rest is for the reader (_raw: not
    the EMA weights)."""
    canonical = json.dumps(settings, sort_keys=True, separators=(",", ":"))
    digest = hashlib.sha256(canonical.encode()).hexdigest()[:8]
    raw = "" if settings["sample.use_ema"] else "_raw"
    sampler = f"{settings['sample.method']}{settings['sample.num_steps']}"
    return f"samples_{settings['step']}_{sampler}_cfg{settings['sample.cfg_scale']:g}{raw}_{digest}"


def open_set(out: epath.Path, settings: dict[str, Any]) -> bool:
    """Creates the set's directory `out` with its set.json, or checks the set.json there against
    `settings`; whether the set existed. A set.json that disagrees (edited, or another
    version's) is a ValueError naming the first setting that differs."""
    path = out / "set.json"
    if not path.exists():
        out.mkdir(parents=True, exist_ok=True)
        record = json.dumps({"set": out.name, "settings": settings}, indent=2)
        files.write_bytes(path, record.encode())  # A name of its own: every process writes it.
        return False
    try:
        stored = json.loads(path.read_text()).get("settings")
    except (ValueError, AttributeError):  # Not JSON, or not an object.
        stored = None
    if not isinstance(stored, dict):
        raise InputError(f"{path}: not a sample set's record (no settings object)")
    if differ := first_difference(stored, settings):
        name, has, wants = differ
        raise InputError(
            f"{out}: its set.json has {name}={has}, but the settings this directory is "
            f"named for have {name}={wants}; move the directory away to draw the set afresh"
        )
    return True


def first_difference(a: dict[str, Any], b: dict[str, Any]) -> tuple[str, str, str] | None:
    """The first setting (in name order) where two sets' settings differ, with its value in
    each as JSON ("nothing" where one lacks it); None when they are equal."""
    for name in sorted(a.keys() | b.keys()):
        in_a, in_b = a.get(name, _MISSING), b.get(name, _MISSING)
        if in_a != in_b:
            return name, *("nothing" if v is _MISSING else json.dumps(v) for v in (in_a, in_b))
    return None


def assemble(
    out: epath.Path, settings: dict[str, Any], num_samples: int, config: dict[str, Any]
) -> epath.Path:
    """Writes out/samples.npz from the chunks that hold [0, num_samples), with the record
    (RECORD_KEYS, and `config`: the whole run config that drew it, which `evaluate` reads the
    shapes data and evaluator from) under `record` and in set.json, and grid.png of the first
    64 samples.

    Returns: the path of samples.npz: `arr_0` uint8 (N, H, W, 3), `arr_1` labels (N,), `record`
    the JSON text as a numpy string (loads without pickle).
    """
    samples, labels, used = chunks.read(out, num_samples)
    record = {
        "set": out.name,
        "settings": settings,
        "num_samples": num_samples,
        "chunks": used,
        "config": config,
    }
    text = json.dumps(record, indent=2)
    files.write_npz(out / "samples.npz", arr_0=samples, arr_1=labels, record=np.array(text))
    files.write_bytes(out / "set.json", text.encode())
    grid = samples[:64]
    side = int(np.sqrt(len(grid)))
    files.save_grid(grid[: side * side].reshape(side, side, *grid.shape[1:]), out / "grid.png")
    return out / "samples.npz"


def read_record(arrays: dict[str, np.ndarray], name: str) -> dict[str, Any]:
    """The record `sample_set` embeds in samples.npz (`arrays`, as `files.read_npz` reads them):
    RECORD_KEYS, its settings holding SETTING_KEYS. A ValueError, starting with `name`, when it
    is absent or incomplete."""
    written = "`python -m sara_jax.sample` writes complete records"
    if "record" not in arrays:
        raise InputError(f"{name}: no record of the settings that drew its samples; {written}")
    try:
        record = json.loads(str(arrays["record"]))
    except ValueError as err:
        raise InputError(f"{name}: its record is not JSON ({err}); {written}") from None
    if not isinstance(record, dict):
        raise InputError(f"{name}: its record is not a JSON object; {written}")
    missing = [key for key in RECORD_KEYS if key not in record]
    settings = record.get("settings")
    settings = settings if isinstance(settings, dict) else {}
    missing += [f"settings.{key}" for key in SETTING_KEYS if key not in settings]
    if missing:
        raise InputError(f"{name}: its record lacks {', '.join(missing)}; {written}")
    return record


def sample_set(
    config: ml_collections.ConfigDict,
    workdir: str,
    process_index: int,
    process_count: int,
    step: int | None = None,
) -> epath.Path | None:
    """Draws the indices missing from this process's cells of the set `config` defines at the
    workdir's newest good checkpoint (or at checkpoint `step`); returns its samples.npz
    (`assemble`) once every index of [0, sample.num_samples) is saved.

    Raises `preemption.Preempted` at a safe point after SIGTERM (see the module docstring),
    with every chunk drawn so far saved.
    """
    s = config.sample
    params, step = restore_params(config, workdir, s.use_ema, step)
    settings = set_settings(config, step)
    out = files.resolve(workdir) / set_name(settings)
    existed = open_set(out, settings)
    saved = list(chunks.saved(out))
    num_cells = -(-s.num_samples // s.batch_size)

    def cell(c: int) -> tuple[int, int]:
        return c * s.batch_size, min((c + 1) * s.batch_size, s.num_samples)

    # Round r's cell of this process is r * P + p; the last round may have none.
    rounds = [r * process_count + process_index for r in range(-(-num_cells // process_count))]
    mine = [c for c in rounds if c < num_cells]
    todo = {c: gaps for c in mine if (gaps := chunks.uncovered(*cell(c), saved))}
    done = len(mine) - len(todo)
    logging.info(
        "%s the sample set %s: %d cells of %d samples, %d of mine to draw",
        "continuing" if existed else "drawing",
        out,
        num_cells,
        s.batch_size,
        len(todo),
    )

    def kept() -> str:
        whose = "" if process_count == 1 else f" of process {process_index}"
        return f"{done} of the {len(mine)} cells{whose} saved in {out}"

    preemption.check(kept())  # Restoring a large checkpoint takes a while.
    if todo:
        sampler = make_chunk_sampler(config)
        sit_params = sampler.place(params["sit"])
    total = sum(b - a for gaps in todo.values() for a, b in gaps)
    with tqdm.tqdm(total=total, unit="img") as progress:
        for c in rounds:
            for a, b in todo.get(c, ()):
                samples, labels = sampler.draw(sit_params, np.arange(a, b), saved=kept())
                chunks.write(out, a, samples, labels, s.batch_size)
                progress.update(b - a)
            if c in todo:
                done += 1
            preemption.check(kept())
    if chunks.uncovered(0, s.num_samples, chunks.saved(out)):
        logging.info("other processes' chunks are still being drawn")
        return None
    path = assemble(out, settings, s.num_samples, json.loads(config.to_json_best_effort()))
    logging.info("wrote %d samples to %s", s.num_samples, path)
    return path
