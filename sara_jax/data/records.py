"""The preprocessed data set on disk: ArrayRecord shards of examples and a `dataset.json`.

One record per example, a msgpack map of
  image:       uint8 (S, S, 3) ADM-cropped image, stored raw or as PNG bytes (lossless),
  latent_mean: float16 (S/8, S/8, 4) SD-VAE posterior mean,
  latent_std:  float16 (S/8, S/8, 4) SD-VAE posterior std,
  label:       int class index,
  id:          str stable example id (the file's relative path, or TFDS's file_name).
float16 keeps the latents' ~3 significant digits, far below the posterior noise (std) added
to every training sample. Shard k holds examples [k N / K, (k + 1) N / K) of the source
order; `dataset.json` lists the shards with their record counts and sha256, and is written
only when every shard is complete.
"""

import bisect
import concurrent.futures
import dataclasses
import io
import itertools
import json
from pathlib import Path
from typing import Any

import grain
import numpy as np
from array_record.python.array_record_module import ArrayRecordReader
from flax import serialization
from PIL import Image

from sara_jax.io.errors import InputError, MissingInput

INFO_FILE = "dataset.json"
FIELDS = ("image", "latent_mean", "latent_std", "label", "id")
TRAIN_FIELDS = ("image", "latent_mean", "latent_std", "label")
REWRITE = "re-run `python -m sara_jax.preprocess` with the same config to rewrite it"


def shard_name(split: str, index: int, num_shards: int) -> str:
    return f"{split}-{index:05d}-of-{num_shards:05d}.array_record"


def shard_range(index: int, num_shards: int, num_examples: int) -> range:
    """Examples of shard `index`: contiguous, sizes differing by at most one."""
    return range(index * num_examples // num_shards, (index + 1) * num_examples // num_shards)


def encode_example(example: dict[str, Any], image_codec: str) -> bytes:
    """One example (the fields above, image uint8) -> record bytes."""
    image = example["image"]
    if image_codec == "png":
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="PNG")
        image = buffer.getvalue()
    return serialization.msgpack_serialize(
        {
            "image": image,
            "latent_mean": np.asarray(example["latent_mean"], np.float16),
            "latent_std": np.asarray(example["latent_std"], np.float16),
            "label": int(example["label"]),
            "id": str(example["id"]),
        }
    )


def decode_example(record: bytes, fields: tuple[str, ...] = TRAIN_FIELDS) -> dict[str, Any]:
    """Record bytes -> {field: value} with `image` as uint8 (S, S, 3), `label` int32."""
    example = serialization.msgpack_restore(record)
    missing = [f for f in fields if f not in example]
    if missing:
        raise ValueError(f"record lacks fields {missing}; has {sorted(example)}, needs {FIELDS}")
    out = {}
    for field in fields:
        value = example[field]
        if field == "image" and isinstance(value, bytes):
            value = np.asarray(Image.open(io.BytesIO(value)))
        elif field == "label":
            value = np.int32(value)
        out[field] = value
    return out


def read_info(directory: str, field: str = "config.data.dir") -> dict[str, Any]:
    """The data set's `dataset.json`, with errors that say what is missing where."""
    if not directory:
        raise InputError(
            f"{field} is empty: set it to the directory written by `python -m sara_jax.preprocess`"
        )
    path = Path(directory).expanduser()
    if not path.is_dir():
        raise MissingInput(f"{field}={directory!r}: no such directory ({path.absolute()})")
    if not (path / INFO_FILE).is_file():
        found = sorted(p.name for p in path.iterdir())[:5]
        raise MissingInput(
            f"{field}={directory!r} has no {INFO_FILE} (found {found or 'nothing'}): it is not a "
            "finished `python -m sara_jax.preprocess` output; run or resume that first"
        )
    return json.loads((path / INFO_FILE).read_text())


def damaged_shard(path: Path | str, problem: str, err: Exception) -> InputError:
    """The error for a shard that fails to read: its path, what is wrong, and the fix."""
    detail = str(err) or f"{type(err).__name__} without a message"
    return InputError(f"record shard {path} {problem} ({detail}); {REWRITE}")


@dataclasses.dataclass(frozen=True)
class _ShardSpan:
    """A whole shard in array_record's FileInstruction form, so the data source takes its
    record count from us instead of opening every shard a second time."""

    filename: str
    skip: int
    take: int
    examples_in_shard: int


def _num_records(path: Path) -> int:
    try:
        reader = ArrayRecordReader(str(path))
        try:
            return reader.num_records()
        finally:
            reader.close()
    except (RuntimeError, OSError) as err:
        raise damaged_shard(path, "cannot be opened: it is truncated or corrupt", err) from err


class RecordsSource:
    """Random access to the preprocessed examples, decoded (in grain's worker processes).

    A shard that cannot be read (truncated, bytes changed) raises a ValueError naming it and
    saying how to rewrite it, when the source opens or when its record is read.

    Args:
      directory: the preprocess output (data.dir).
      fields: which fields each example yields; training takes numeric ones only.
    """

    def __init__(self, directory: str, fields: tuple[str, ...] = TRAIN_FIELDS):
        self.info = read_info(directory)
        root = Path(directory).expanduser()
        paths = [root / shard["file"] for shard in self.info["shards"]]
        if missing := [p.name for p in paths if not p.is_file()]:
            raise MissingInput(f"data.dir={directory!r} lacks shards {missing[:5]}")
        # Opening reads each shard's footer: a truncated or damaged one fails here, and the
        # error has to be caught per shard to say which one it is.
        with concurrent.futures.ThreadPoolExecutor(min(len(paths), 16)) as pool:
            counts = list(pool.map(_num_records, paths))
        for path, count, shard in zip(paths, counts, self.info["shards"], strict=True):
            if count != shard["num_records"]:
                raise InputError(
                    f"record shard {path} holds {count} records, {INFO_FILE} says "
                    f"{shard['num_records']}; {REWRITE}"
                )
        self._paths = paths
        self._ends = list(itertools.accumulate(counts))
        self._records = grain.sources.ArrayRecordDataSource(
            [_ShardSpan(str(p), 0, n, n) for p, n in zip(paths, counts, strict=True)]
        )
        self._fields = fields
        if len(self._records) != self.info["num_examples"]:
            raise InputError(
                f"data.dir={directory!r}: shards hold {len(self._records)} records, "
                f"{INFO_FILE} says {self.info['num_examples']}"
            )

    def __len__(self) -> int:
        return len(self._records)

    def _where(self, index: int) -> tuple[Path, int]:
        """(shard, position in it) of example `index`."""
        shard = bisect.bisect_right(self._ends, index)
        return self._paths[shard], index - (self._ends[shard - 1] if shard else 0)

    def __getitem__(self, index: int) -> dict[str, Any]:
        # A byte changed inside a record's chunk only shows when that record is read (in a
        # grain worker process when data.num_workers > 0, which passes the error on).
        try:
            record = self._records[index]
        except (RuntimeError, OSError) as err:
            path, position = self._where(index)
            raise damaged_shard(path, f"is corrupt at record {position}", err) from err
        try:
            return decode_example(record, self._fields)
        except (ValueError, OSError) as err:
            path, position = self._where(index)
            problem = f"holds a record ({position}) that is not a preprocess example"
            raise damaged_shard(path, problem, err) from err
