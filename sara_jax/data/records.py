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

import hashlib
import io
import json
from pathlib import Path
from typing import Any

import grain
import numpy as np
from flax import serialization
from PIL import Image

INFO_FILE = "dataset.json"
FIELDS = ("image", "latent_mean", "latent_std", "label", "id")
TRAIN_FIELDS = ("image", "latent_mean", "latent_std", "label")


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


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 24):
            digest.update(chunk)
    return digest.hexdigest()


def read_info(directory: str, field: str = "config.data.dir") -> dict[str, Any]:
    """The data set's `dataset.json`, with errors that say what is missing where."""
    if not directory:
        raise ValueError(
            f"{field} is empty: set it to the directory written by `python -m sara_jax.preprocess`"
        )
    path = Path(directory).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(f"{field}={directory!r}: no such directory ({path.absolute()})")
    if not (path / INFO_FILE).is_file():
        found = sorted(p.name for p in path.iterdir())[:5]
        raise FileNotFoundError(
            f"{field}={directory!r} has no {INFO_FILE} (found {found or 'nothing'}): it is not a "
            "finished `python -m sara_jax.preprocess` output; run or resume that first"
        )
    return json.loads((path / INFO_FILE).read_text())


class RecordsSource:
    """Random access to the preprocessed examples, decoded (in grain's worker processes).

    Args:
      directory: the preprocess output (data.dir).
      fields: which fields each example yields; training takes numeric ones only.
    """

    def __init__(self, directory: str, fields: tuple[str, ...] = TRAIN_FIELDS):
        self.info = read_info(directory)
        root = Path(directory).expanduser()
        paths = [root / shard["file"] for shard in self.info["shards"]]
        if missing := [p.name for p in paths if not p.is_file()]:
            raise FileNotFoundError(f"data.dir={directory!r} lacks shards {missing[:5]}")
        self._records = grain.sources.ArrayRecordDataSource([str(p) for p in paths])
        self._fields = fields
        if len(self._records) != self.info["num_examples"]:
            raise ValueError(
                f"data.dir={directory!r}: shards hold {len(self._records)} records, "
                f"{INFO_FILE} says {self.info['num_examples']}"
            )

    def __len__(self) -> int:
        return len(self._records)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return decode_example(self._records[index], self._fields)
