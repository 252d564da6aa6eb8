"""Files the jobs write and read: local or gs:// paths, written whole or not at all.

Every writer goes through a temporary file beside the target and a rename, so a kill mid-write
never leaves a truncated file that a reader or a resumed job would trust. Paths go through
etils.epath (as orbax and clu do): pathlib would fold `gs://b/run` into the local `gs:/b/run`.
"""

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
from etils import epath
from PIL import Image


def resolve(path: str | os.PathLike) -> epath.Path:
    """`path` as an epath.Path: cloud URLs as they are, local paths made absolute (orbax
    requires absolute checkpoint directories)."""
    text = os.fspath(path)
    if "://" in text:
        return epath.Path(text)
    return epath.Path(os.path.abspath(os.path.expanduser(text)))


def write_text(path: Path, text: str) -> None:
    """`text` at `path` (a pathlib or etils.epath Path)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def write_bytes(path: Path, data: bytes) -> None:
    """`data` at `path` through a temporary name of this process's own, so concurrent writers
    of the same file (two runs filling one cache) never mix their bytes."""
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    tmp.write_bytes(data)
    tmp.replace(path)


def write_json(path: Path, value: Any) -> None:
    """`value` as indented JSON at `path` (a pathlib or etils.epath Path)."""
    write_text(path, json.dumps(value, indent=2))


def write_npz(path: Path, **arrays: np.ndarray) -> None:
    """np.savez of `arrays` at `path` (a pathlib or etils.epath Path)."""
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as f:  # Through the path, so gs:// paths work too.
        np.savez(f, **arrays)
    tmp.replace(path)


def read_npz(path: Path) -> dict[str, np.ndarray]:
    """Every array of the .npz at `path` (a pathlib or etils.epath Path)."""
    with path.open("rb") as f, np.load(f) as data:
        return {name: data[name] for name in data.files}


def to_uint8(x: np.ndarray) -> np.ndarray:
    """Images in [-1, 1] -> uint8 in [0, 255], rounding and clipping. x: (..., H, W, 3)."""
    return np.clip(np.round((np.asarray(x, np.float32) + 1.0) * 127.5), 0, 255).astype(np.uint8)


def save_grid(images: np.ndarray, path: str | os.PathLike, pad: int = 2) -> None:
    """Tiles uint8 images (rows, cols, H, W, 3) into one PNG, written atomically.

    Each row is typically one class, each column one sample.
    """
    rows, cols, h, w, c = images.shape
    grid = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, c), 255, np.uint8)
    for r in range(rows):
        for k in range(cols):
            y, x = pad + r * (h + pad), pad + k * (w + pad)
            grid[y : y + h, x : x + w] = images[r, k]
    path = epath.Path(path)  # Local or gs://.
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as f:
        Image.fromarray(grid).save(f, format="PNG")
    tmp.replace(path)
