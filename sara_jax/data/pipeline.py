"""grain input pipeline: a shuffled, repeated stream of records cut into per-process batches.

The global stream is defined once, independently of the number of processes: epoch `e` is a
permutation of the source (seeded by `seed` and `e`) cut to a whole number of global batches, and
global batch `k` is stream elements `[k G, (k + 1) G)`. Process `p` of `P` reads rows
`[p G/P, (p + 1) G/P)` of every global batch, so concatenating all processes' batches for a step
gives the same global batch for any `P`, and each process only renders or reads its own rows.

Checkpointing: the iterator's state is a small JSON-serialisable dict. With orbax, save it in a
`ocp.args.Composite` entry as `grain.checkpoint.CheckpointSave(iterator)` and restore it with
`grain.checkpoint.CheckpointRestore(iterator)` (grain registers its handler for these args).
"""

import grain
import ml_collections

from sara_jax.data.records import RecordsSource
from sara_jax.data.shapes import ShapesSource
from sara_jax.io.errors import InputError

SUPPORTED_SOURCES: tuple[str, ...] = ("records", "shapes")


def make_source(data_config: ml_collections.ConfigDict) -> grain.sources.RandomAccessDataSource:
    """Builds the random-access source that `data_config.source` names.

    Args:
      data_config: the `data` block of the run config, with fields `source`, `num_examples`,
        `image_size`, `num_classes` and `seed`.

    Returns:
      A source whose records are `{"image": uint8 (S, S, 3), "label": int32 scalar}`, plus
      "latent_mean" and "latent_std" float16 (S/8, S/8, 4) for "records".
    """
    if data_config.source == "records":
        source = RecordsSource(data_config.dir)
        info = source.info
        for field, key in (
            ("num_examples", "num_examples"),
            ("image_size", "image_size"),
            ("num_classes", "num_classes"),
        ):
            if data_config[field] != info[key]:
                raise InputError(
                    f"config.data.{field}={data_config[field]} but the records in "
                    f"data.dir={data_config.dir!r} have {key}={info[key]}"
                )
        return source
    if data_config.source == "shapes":
        return ShapesSource(
            num_examples=data_config.num_examples,
            image_size=data_config.image_size,
            num_classes=data_config.num_classes,
            seed=data_config.seed,
        )
    raise ValueError(
        f"data.source must be one of {', '.join(SUPPORTED_SOURCES)}, got {data_config.source!r}."
    )


def make_train_iterator(
    source: grain.sources.RandomAccessDataSource,
    *,
    global_batch_size: int,
    seed: int,
    process_index: int = 0,
    process_count: int = 1,
    num_workers: int = 0,
) -> grain.DatasetIterator:
    """Returns an infinite, checkpointable iterator over this process's share of each batch.

    Args:
      source: a random-access source (`__len__`, `__getitem__`) of dict records.
      global_batch_size: G, the batch summed over all processes.
      seed: shuffle seed in [0, 2**32); every epoch uses a different permutation.
      process_index: p, this process's rank in [0, process_count).
      process_count: P, the number of processes; must divide G.
      num_workers: grain worker processes that prefetch batches; 0 reads in this process.

    Returns:
      An iterator of dicts with the source's keys, each leaf a numpy array of shape
      `(G / P, *record_shape)` (e.g. image: uint8 (G/P, S, S, 3), label: int32 (G/P,)).
      `get_state()` / `set_state()` resume exactly.
    """
    if global_batch_size < 1:
        raise ValueError(f"global_batch_size must be >= 1, got {global_batch_size}.")
    if process_count < 1:
        raise ValueError(f"process_count must be >= 1, got {process_count}.")
    if not 0 <= process_index < process_count:
        raise ValueError(
            f"process_index must be in [0, process_count={process_count}), got {process_index}."
        )
    if global_batch_size % process_count:
        raise ValueError(
            f"global_batch_size ({global_batch_size}) must be divisible by process_count "
            f"({process_count})."
        )
    if global_batch_size > len(source):
        raise ValueError(
            f"global_batch_size ({global_batch_size}) must be <= the number of examples in the "
            f"source ({len(source)})."
        )
    if num_workers < 0:
        raise ValueError(f"num_workers must be >= 0, got {num_workers}.")

    local_batch_size = global_batch_size // process_count
    epoch_length = len(source) // global_batch_size * global_batch_size
    # Indices past a dataset's length carry the epoch through grain's index-based ops: the slice
    # maps e * epoch_length + i to e * len(source) + i, and the shuffle draws a new permutation
    # for each e. So every epoch is a fresh permutation whose tail (< one global batch) is dropped
    # and no batch straddles two epochs.
    stream = grain.MapDataset.source(source).shuffle(seed=seed)[:epoch_length].repeat()
    # Local batch j holds stream rows [j G/P, (j + 1) G/P); step k's global batch is local
    # batches k P ... k P + P - 1, of which this process takes number k P + p.
    batches = stream.batch(local_batch_size, drop_remainder=True)[process_index::process_count]
    # Elements are whole batches; parallel reading comes from worker processes (num_workers),
    # not from threads that would contend for the GIL while rendering or decoding.
    dataset = batches.to_iter_dataset(grain.ReadOptions(num_threads=0, prefetch_buffer_size=0))
    if num_workers > 0:
        dataset = dataset.mp_prefetch(grain.MultiprocessingOptions(num_workers=num_workers))
    return iter(dataset)
