"""Examples/sec of the training input pipeline on this machine.

    python benchmarks/data_throughput.py --data_dir=RECORDS --num_workers=8
    python benchmarks/data_throughput.py            # synthetic 256-px records in a temp dir

Reads the records through the same grain pipeline as training (global shuffle, this process's
rows of each global batch, worker processes decoding), and prints the rate after a warm-up.
Compare with the train step's examples/sec (logged as `images_per_sec`): if the loader is
slower, data is the bottleneck; raise --num_workers.
"""

import concurrent.futures
import tempfile
import time
from pathlib import Path

import numpy as np
import tqdm
from absl import app, flags

from sara_jax.data import records
from sara_jax.data.pipeline import make_train_iterator
from sara_jax.data.records import RecordsSource
from sara_jax.data.shard_writer import write_shard
from sara_jax.io.files import write_json

_DATA_DIR = flags.DEFINE_string("data_dir", None, "Records directory; synthetic if unset.")
_BATCH = flags.DEFINE_integer("batch_size", 256, "Global batch size (one process).")
_WORKERS = flags.DEFINE_integer("num_workers", 4, "grain worker processes.")
_STEPS = flags.DEFINE_integer("steps", 50, "Batches timed after the warm-up.")
_WARMUP = flags.DEFINE_integer("warmup", 5, "Batches read before timing.")
_SYNTHETIC = flags.DEFINE_integer("synthetic_examples", 2048, "Size of the synthetic set.")
_CODEC = flags.DEFINE_enum("codec", "png", ["png", "raw"], "Image codec of synthetic records.")


def synthetic_records(out: Path, num_examples: int, codec: str, size: int = 256) -> None:
    """ImageNet-shaped records: smooth random 256-px images (PNG-compressible like photos)."""
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, size=(64, size // 8, size // 8, 3), dtype=np.uint8)

    def example(i: int) -> dict:
        image = np.kron(base[i % 64], np.ones((8, 8, 1), np.uint8))
        return {"image": image, "label": i % 1000, "id": f"synthetic/{i:07d}"}

    def posterior(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        latent = np.zeros((len(images), size // 8, size // 8, 4), np.float32)
        return latent, latent + 0.1

    source = [example(i) for i in range(num_examples)]
    num_shards = 8
    shards = []
    with concurrent.futures.ThreadPoolExecutor(9) as pool, tqdm.tqdm(disable=True) as bar:
        for k in range(num_shards):
            name = records.shard_name("train", k, num_shards)
            indices = records.shard_range(k, num_shards, num_examples)
            shards.append(write_shard(out / name, indices, source, posterior, 64, pool, codec, bar))
    info = {"num_examples": num_examples, "num_classes": 1000, "image_size": size}
    write_json(out / records.INFO_FILE, {**info, "shards": shards})


def main(argv: list[str]) -> None:
    del argv
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = _DATA_DIR.value
        if data_dir is None:
            data_dir = tmp
            synthetic_records(Path(tmp), _SYNTHETIC.value, _CODEC.value)
        source = RecordsSource(data_dir)
        iterator = make_train_iterator(
            source, global_batch_size=_BATCH.value, seed=0, num_workers=_WORKERS.value
        )
        for _ in range(_WARMUP.value):
            next(iterator)
        start = time.perf_counter()
        for _ in range(_STEPS.value):
            next(iterator)
        seconds = time.perf_counter() - start
        rate = _STEPS.value * _BATCH.value / seconds
        print(
            f"{data_dir if _DATA_DIR.value else 'synthetic ' + _CODEC.value}: "
            f"{rate:.0f} examples/s ({_BATCH.value} x {_STEPS.value} in {seconds:.1f} s, "
            f"{_WORKERS.value} workers)"
        )


if __name__ == "__main__":
    app.run(main)
