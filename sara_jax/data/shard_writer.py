"""Writing and certifying record shards (the preprocess job's storage side).

A shard is written to a temporary file and renamed when complete; its certificate
`<shard>.done.json` (record count and sha256) is written after that. So a shard file without a
matching certificate is unfinished or damaged, and is rewritten by the next run.
"""

import concurrent.futures
import json
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import tqdm
from array_record.python.array_record_module import ArrayRecordWriter

from sara_jax.data import records
from sara_jax.io import files

Encode = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


def certificate(out: Path, name: str) -> Path:
    return out / f"{name}.done.json"


def shard_is_complete(out: Path, name: str, num_records: int) -> bool:
    """Whether shard `name` was finished and its bytes still match its certificate."""
    cert, shard = certificate(out, name), out / name
    if not (cert.is_file() and shard.is_file()):
        return False
    done = json.loads(cert.read_text())
    return done["num_records"] == num_records and done["sha256"] == files.sha256(shard)


def _batches(indices: range, size: int) -> Iterator[range]:
    for start in range(indices.start, indices.stop, size):
        yield range(start, min(start + size, indices.stop))


def write_shard(
    path: Path,
    indices: range,
    source: Sequence[dict],
    encode: Encode,
    batch_size: int,
    pool: concurrent.futures.Executor,
    image_codec: str,
    progress: tqdm.tqdm,
) -> dict[str, Any]:
    """Writes examples `indices` of `source` to `path`; returns its certificate."""
    tmp = path.with_name(path.name + ".tmp")
    writer = ArrayRecordWriter(str(tmp), "group_size:1")
    # Decoding the next batch (threads) overlaps encoding this one (accelerators).
    batches = _batches(indices, batch_size)
    pending = pool.submit(lambda b: list(pool.map(source.__getitem__, b)), next(batches))
    for batch in [*batches, None]:
        examples = pending.result()
        if batch is not None:
            pending = pool.submit(lambda b: list(pool.map(source.__getitem__, b)), batch)
        images = np.stack([e["image"] for e in examples])
        # Every batch has the same shape (one compiled program, same numerics for each shard).
        padded = np.zeros((batch_size, *images.shape[1:]), np.uint8)
        padded[: len(images)] = images
        mean, std = encode(padded)
        for i, example in enumerate(examples):
            record = {**example, "latent_mean": mean[i], "latent_std": std[i]}
            writer.write(records.encode_example(record, image_codec))
        progress.update(len(examples))
    writer.close()
    os.replace(tmp, path)
    return {"file": path.name, "num_records": len(indices), "sha256": files.sha256(path)}
