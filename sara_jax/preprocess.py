"""Raw ImageNet -> ADM-cropped images + SD-VAE posteriors, as ArrayRecord shards in data.dir.

`python -m sara_jax.preprocess --config=configs/sit_xl.py --config.preprocess.path=IMAGENET
--config.data.dir=OUT` reads `config.preprocess.source` (an image folder or TFDS), crops every
image to `data.image_size` (ADM's center crop), encodes the batch with the VAE
`config.vae.checkpoint` on all local accelerators, and writes the shards that
`sara_jax.data.records` describes. With `--distributed` (one process per host) process p
writes shards p, p + P, ...

Resumable: a shard is written to a temporary file, renamed, and then certified by a
`<shard>.done.json` holding its record count and sha256. A re-run skips every shard whose file
still matches its certificate and rewrites the rest (missing, truncated or corrupt). The last
process to finish writes `dataset.json`, which training requires. The output does not depend
on interruptions: a shard's bytes are a function of its examples alone.
"""

import concurrent.futures
import json
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import tqdm
from absl import logging
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from sara_jax.converters.vae import load_vae
from sara_jax.data import records
from sara_jax.data.imagenet import make_raw_source
from sara_jax.data.shard_writer import (
    Encode,
    certificate,
    shard_is_complete,
    write_shard,
)
from sara_jax.io import cli
from sara_jax.io.errors import InputError
from sara_jax.io.files import write_json
from sara_jax.models.dtype import dtype_of

PyTree = Any


def make_vae_encoder(vae: ml_collections.ConfigDict) -> Encode:
    """uint8 images (B, S, S, 3) -> posterior (mean, std), each float32 (B, S/8, S/8, 4),
    data parallel over this process's devices (B must divide by their count).

    vae: `config.vae`.
    """
    module, params = load_vae(vae.checkpoint, "config.vae.checkpoint", dtype_of(vae.compute_dtype))
    mesh = jax.sharding.Mesh(np.array(jax.local_devices()), ("data",))
    batch_sharding = NamedSharding(mesh, P("data"))
    params = jax.device_put(params, NamedSharding(mesh, P()))

    @jax.jit
    def encode(params: PyTree, images: jax.Array) -> tuple[jax.Array, jax.Array]:
        x = images.astype(jnp.float32) / 127.5 - 1.0  # The VAE's [-1, 1] input range.
        return module.apply({"params": params}, x, method=module.encode)

    def run(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        mean, std = encode(params, jax.device_put(images, batch_sharding))
        return np.asarray(mean), np.asarray(std)

    return run


def _dataset_info(
    out: Path, names: list[str], config: ml_collections.ConfigDict, source: Any
) -> dict[str, Any] | None:
    """dataset.json's content once every shard is certified, else None."""
    shards = []
    for name in names:
        cert = certificate(out, name)
        if not cert.is_file():
            return None
        shards.append(json.loads(cert.read_text()))
    p = config.preprocess
    return {
        "num_examples": sum(s["num_records"] for s in shards),
        "num_classes": source.num_classes,
        "image_size": config.data.image_size,
        "image_codec": p.image_codec,
        "latent_dtype": "float16",
        "vae": config.vae.checkpoint,
        "source": {"kind": p.source, "path": p.path, "split": p.split},
        "shards": shards,
    }


def preprocess(config: ml_collections.ConfigDict, process_index: int, process_count: int) -> None:
    """Writes this process's shards of config.data.dir, then dataset.json if all are done."""
    p = config.preprocess
    if not config.data.dir:
        raise InputError("config.data.dir is empty: set it to the output directory")
    if p.batch_size % jax.local_device_count():
        raise InputError(
            f"config.preprocess.batch_size={p.batch_size} must be divisible by the "
            f"{jax.local_device_count()} local devices"
        )
    out = Path(config.data.dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    source = make_raw_source(p.source, p.path, config.data.image_size, p.split)
    num_shards = min(p.num_shards, len(source))
    names = [records.shard_name(p.split, k, num_shards) for k in range(num_shards)]
    ranges = [records.shard_range(k, num_shards, len(source)) for k in range(num_shards)]
    mine = range(process_index, num_shards, process_count)
    todo = [k for k in mine if not shard_is_complete(out, names[k], len(ranges[k]))]
    logging.info(
        "process %d/%d: %d examples in %d shards, %d of mine to write",
        process_index,
        process_count,
        len(source),
        num_shards,
        len(todo),
    )
    if todo:
        encode = make_vae_encoder(config.vae)
        total = sum(len(ranges[k]) for k in todo)
        with (
            concurrent.futures.ThreadPoolExecutor(p.num_threads + 1) as pool,
            tqdm.tqdm(total=total, unit="img", desc=f"process {process_index}") as progress,
        ):
            for k in todo:
                cert = write_shard(
                    out / names[k],
                    ranges[k],
                    source,
                    encode,
                    p.batch_size,
                    pool,
                    p.image_codec,
                    progress,
                )
                write_json(certificate(out, names[k]), cert)
    info = _dataset_info(out, names, config, source)
    if info is None:
        logging.info("other processes' shards are still being written")
    else:
        write_json(out / records.INFO_FILE, info)
        logging.info("wrote %s: %d examples", out / records.INFO_FILE, info["num_examples"])


def main(argv: list[str]) -> None:
    config = cli.start(argv)
    preprocess(config, jax.process_index(), jax.process_count())


if __name__ == "__main__":
    cli.define_flags()
    cli.run(main)
