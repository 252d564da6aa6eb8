"""Finding and reading a published checkpoint: a Hugging Face hub name, a local directory, or a
single .safetensors / .pth / .bin file, into a flat {name: numpy array} state dict.

safetensors files are read with numpy alone, so converting Hugging Face checkpoints needs no
torch; only pickled torch files (.pth, .bin, .pt) do.
"""

import argparse
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from sara_jax.io.errors import MissingInput

StateDict = dict[str, np.ndarray]

# In the order they are tried, in a directory or a hub repository (transformers' names, then
# diffusers').
WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "diffusion_pytorch_model.safetensors",
    "diffusion_pytorch_model.bin",
)
# MoCo v3 / RCG publish torch.save files named .pth.tar (a pickle, not a tar archive).
TORCH_SUFFIXES = (".pth", ".pt", ".bin", ".pth.tar")


def is_hub_name(source: str) -> bool:
    """'org/name' with no path-like start: a Hugging Face hub repository id."""
    parts = source.split("/")
    return len(parts) == 2 and all(parts) and not source.startswith((".", "~"))


def _how_to_provide(source: str, field: str) -> str:
    hub = source if is_hub_name(source) else "ORG/NAME"
    return (
        f"To provide the weights, on a machine with internet run `hf download {hub} "
        f"--local-dir DIR` (or copy the .safetensors / .pth file) and set {field}=DIR or the "
        "file's path; a hub name is read from the Hugging Face cache ($HF_HOME) when offline."
    )


def _download(repo: str, field: str) -> Path:
    """The first of WEIGHT_FILES that the hub repository (or the local HF cache) has."""
    import huggingface_hub
    from huggingface_hub import constants, errors

    failures = []
    for filename in WEIGHT_FILES:
        try:
            path = Path(huggingface_hub.hf_hub_download(repo, filename))
        except errors.EntryNotFoundError:
            continue
        except Exception as e:  # noqa: BLE001 -- offline, unknown repo, auth: all reported below
            failures.append(f"{filename}: {type(e).__name__}: {e}".splitlines()[0])
            continue
        if filename.endswith(".index.json"):
            for shard in sorted(set(json.loads(path.read_text())["weight_map"].values())):
                huggingface_hub.hf_hub_download(repo, shard)
        return path
    raise MissingInput(
        f"{field}={repo!r}: no local file or directory of that name (looked in {Path.cwd()}), "
        f"and the Hugging Face hub could not provide {' or '.join(WEIGHT_FILES)} (cache: "
        f"{constants.HF_HUB_CACHE}; {'; '.join(failures) or 'no weight file in the repo'}). "
        + _how_to_provide(repo, field)
    )


def resolve(source: str, field: str) -> Path:
    """The weight file `source` names, downloading a hub checkpoint if needed.

    Args:
      source: a hub id ('facebook/dinov2-base'), a directory holding one of WEIGHT_FILES, or a
        weight file.
      field: the config field it came from, for error messages.
    """
    path = Path(os.path.expanduser(source))
    if path.is_dir():
        for filename in WEIGHT_FILES:
            if (path / filename).is_file():
                return path / filename
        raise MissingInput(
            f"{field}={source!r}: directory {path.resolve()} holds none of "
            + ", ".join(WEIGHT_FILES)
        )
    if path.is_file():
        return path
    if is_hub_name(source):
        return _download(source, field)
    raise MissingInput(
        f"{field}={source!r}: no such file or directory ({path.resolve()}), and not a Hugging "
        "Face hub id of the form 'org/name'. " + _how_to_provide(source, field)
    )


def read_torch_file(path: Path) -> Any:
    """Everything a torch.save file holds, with each tensor as a numpy array (floating ones as
    float32) inside the same dicts, lists and tuples.

    Loading stays safe (`weights_only=True`); the one class allowed besides tensors and plain
    containers is argparse.Namespace, which REPA's train.py saves as `args`.
    """
    try:
        import torch
    except ImportError as e:
        raise ImportError(
            f"reading the pickled torch checkpoint {path} needs torch (the CPU wheel is enough: "
            "`pip install -e .[convert]`); or use a .safetensors file"
        ) from e

    def to_numpy(obj: Any) -> Any:
        if isinstance(obj, torch.Tensor):
            return (obj.float() if obj.is_floating_point() else obj).numpy()
        if isinstance(obj, dict):
            return {k: to_numpy(v) for k, v in obj.items()}
        if isinstance(obj, list | tuple):
            return type(obj)(to_numpy(v) for v in obj)
        return obj

    with torch.serialization.safe_globals([argparse.Namespace]):
        return to_numpy(torch.load(path, map_location="cpu", weights_only=True))


def _read_torch(path: Path) -> StateDict:
    obj = read_torch_file(path)
    # Training checkpoints wrap the weights (MAE: {"model": ...}; MoCo: {"state_dict": ...}).
    for wrapper in ("model", "state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(wrapper), dict):
            obj = obj[wrapper]
    return {k: v for k, v in obj.items() if isinstance(v, np.ndarray)}


def read_state_dict(path: Path) -> StateDict:
    """All tensors of a weight file (a sharded safetensors index reads every shard)."""
    from safetensors.numpy import load_file

    if path.name.endswith(".index.json"):
        shards = sorted(set(json.loads(path.read_text())["weight_map"].values()))
        return {k: v for shard in shards for k, v in load_file(path.parent / shard).items()}
    if path.suffix == ".safetensors":
        return load_file(path)
    if path.name.endswith(TORCH_SUFFIXES):
        return _read_torch(path)
    raise ValueError(
        f"{path}: unknown weight file type; expected .safetensors, "
        f"model.safetensors.index.json or one of {', '.join(TORCH_SUFFIXES)}"
    )


def load_state_dict(source: str, field: str) -> StateDict:
    """read_state_dict(resolve(source, field))."""
    return read_state_dict(resolve(source, field))
