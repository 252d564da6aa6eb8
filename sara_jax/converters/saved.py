"""Converted encoder params saved once with orbax, and reused without torch or the hub.

A directory holds the params (an orbax checkpoint) and `sara_jax_encoder.json`, which records
what they are: the encoder name, the input size (it fixes the resampled position table) and the
checkpoint they came from. The json is written last, so a half-written directory is not taken
for a converted one.
"""

import json
from typing import Any

import jax
import orbax.checkpoint as ocp
from etils import epath

from sara_jax.io.files import write_json

PyTree = Any
INFO_FILE = "sara_jax_encoder.json"


def is_converted(directory: str) -> bool:
    """Whether `directory` holds params written by `save_converted`."""
    path = epath.Path(directory).expanduser()
    return path.is_dir() and (path / INFO_FILE).exists()


def save_converted(directory: str, params: PyTree, info: dict[str, Any]) -> None:
    """Saves `params` and `info` (json-able) under the new directory `directory`."""
    path = epath.Path(directory).expanduser().absolute()
    with ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save(path / "params", params)
    write_json(path / INFO_FILE, info)


def restore_converted(directory: str, expected: PyTree, info: dict[str, Any], field: str) -> PyTree:
    """Params saved by `save_converted`, after checking they are what `info` asks for.

    Args:
      expected: the target tree (arrays or ShapeDtypeStructs), for shapes and dtypes.
      info: the entries of the saved info that must match (encoder name, image size).
      field: the config field naming `directory`, for errors.
    """
    path = epath.Path(directory).expanduser().absolute()
    saved = json.loads((path / INFO_FILE).read_text())
    for key, want in info.items():
        if saved.get(key) != want:
            raise ValueError(
                f"{field}={directory!r} holds params converted for {key}={saved.get(key)!r}, "
                f"but the config asks for {key}={want!r}; convert again with "
                "`python -m sara_jax.convert`"
            )
    target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), expected)
    with ocp.StandardCheckpointer() as checkpointer:
        return checkpointer.restore(path / "params", target)
