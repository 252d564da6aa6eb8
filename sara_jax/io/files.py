"""Files the jobs write and read: local or gs:// paths, written whole or not at all.

Every writer goes through a temporary file beside the target and a rename, so a kill mid-write
never leaves a truncated file that a reader or a resumed job would trust. Paths go through
etils.epath (as orbax and clu do): pathlib would fold `gs://b/run` into the local `gs:/b/run`.
"""

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import numpy as np
from absl import logging
from etils import epath
from flax import serialization
from PIL import Image


def resolve(path: str | os.PathLike) -> epath.Path:
    """`path` as an epath.Path: cloud URLs as they are, local paths made absolute (orbax
    requires absolute checkpoint directories)."""
    text = os.fspath(path)
    if "://" in text:
        return epath.Path(text)
    return epath.Path(os.path.abspath(os.path.expanduser(text)))


def sha256(path: str | os.PathLike) -> str:
    """The hex sha256 of the (local) file at `path`, read in 16 MiB pieces."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 24):
            digest.update(chunk)
    return digest.hexdigest()


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
    """np.savez of `arrays` at `path` (a pathlib or etils.epath Path), through a temporary name
    of this process's own (processes that finish a sample set together each assemble it)."""
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    with tmp.open("wb") as f:  # Through the path, so gs:// paths work too.
        np.savez(f, **arrays)
    tmp.replace(path)


def read_npz(path: Path) -> dict[str, np.ndarray]:
    """Every array of the .npz at `path` (a pathlib or etils.epath Path)."""
    with path.open("rb") as f, np.load(f) as data:
        return {name: data[name] for name in data.files}


def _tree_mismatch(tree: Any, template: Any) -> str | None:
    """How `tree` differs from `template` (structure, leaf shapes and dtypes), or None."""
    if jax.tree.structure(tree) != jax.tree.structure(template):
        return "its tree of arrays is not the expected one"
    for (where, leaf), want in zip(
        jax.tree_util.tree_leaves_with_path(tree), jax.tree.leaves(template), strict=True
    ):
        dtype = getattr(want, "dtype", None)  # Python scalars in the template have none.
        if np.shape(leaf) != np.shape(want) or (dtype is not None and leaf.dtype != dtype):
            found = f"{getattr(leaf, 'dtype', type(leaf).__name__)} {np.shape(leaf)}"
            return f"{jax.tree_util.keystr(where)} is {found}, expected {dtype} {np.shape(want)}"
    return None


def read_cached_tree(path: Path, template: Any) -> Any:
    """The tree `cached_tree` stored at `path`; a ValueError saying why it is unusable."""
    # msgpack has no checksum: a changed byte inside an array would be read without complaint.
    stored = serialization.msgpack_restore(path.read_bytes())
    if not (isinstance(stored, dict) and stored.keys() == {"sha256", "tree"}):
        raise ValueError("it lacks the sha256 this version stores (an older version's cache?)")
    if hashlib.sha256(stored["tree"]).hexdigest() != stored["sha256"]:
        raise ValueError("its checksum does not match its content")
    tree = serialization.from_bytes(template, stored["tree"])
    if mismatch := _tree_mismatch(tree, template):
        raise ValueError(mismatch)
    return tree


def cached_tree(path: Path, template: Any, build: Callable[[], Any], what: str) -> Any:
    """The pytree cached at `path`, or `build()` written there (atomically) when the file is
    missing or unusable: unreadable, damaged (a sha256 is stored with it) or not shaped like
    `template`. An unusable one is named in a warning and overwritten.

    Args:
      path: the cache file (local).
      template: the expected tree: arrays, jax.ShapeDtypeStruct or Python scalars as leaves.
      build: computes the tree (same structure as `template`) when the cache cannot be used.
      what: what the log lines call the tree, e.g. "demo encoder".
    Returns: the tree, as stored (numpy leaves) or as `build` returned it.
    """
    if path.exists():
        try:
            tree = read_cached_tree(path, template)
        except Exception as err:  # Whatever is wrong with the file, rebuilding fixes it.
            logging.warning(
                "%s: the cache %s cannot be used (%s); rebuilding it and overwriting the file",
                what,
                path,
                str(err) or type(err).__name__,
            )
        else:
            logging.info("%s: loading cached weights %s", what, path)
            return tree
    tree = build()
    path.parent.mkdir(parents=True, exist_ok=True)
    data = serialization.to_bytes(tree)
    stored = {"sha256": hashlib.sha256(data).hexdigest(), "tree": data}
    write_bytes(path, serialization.msgpack_serialize(stored))
    return tree


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
