"""Moving a state dict's tensors onto a Flax param tree, with errors that name the key.

A converter takes each tensor it needs by its checkpoint name, transforms it (torch Linear
weights are (out, in), Flax kernels (in, out); torch convs OIHW, Flax HWIO) and puts it at a
Flax path. `finish` then checks the result against the model's expected tree: every param
filled with the right shape, and no checkpoint tensor left over that the converter did not
read or explicitly ignore.
"""

import re
from collections.abc import Iterable, Sequence
from typing import Any

import jax
import numpy as np
from flax import traverse_util

from sara_jax.converters.checkpoint import StateDict

PyTree = Any


def linear(weight: np.ndarray) -> np.ndarray:
    """torch Linear weight (out, in) -> Flax Dense kernel (in, out)."""
    return weight.T


def conv(weight: np.ndarray) -> np.ndarray:
    """torch Conv2d weight (O, I, kh, kw) -> Flax Conv kernel (kh, kw, I, O)."""
    return weight.transpose(2, 3, 1, 0)


class Converter:
    """One conversion of `state_dict` (read from `source`) into a Flax tree.

    Args:
      ignore: regular expressions (re.fullmatch) of checkpoint keys that are known and
        deliberately unused (a classifier head, a text tower, BatchNorm counters).
    """

    def __init__(self, state_dict: StateDict, source: str, ignore: Iterable[str] = ()):
        self.source = source
        self._tensors = dict(state_dict)
        self._ignore = [re.compile(p) for p in ignore]
        self._taken: set[str] = set()
        self._flat: dict[tuple[str, ...], np.ndarray] = {}
        self._origin: dict[tuple[str, ...], tuple[str, ...]] = {}

    def has(self, key: str) -> bool:
        return key in self._tensors

    def take(self, key: str) -> np.ndarray:
        """The tensor named `key`; an error naming it when the checkpoint lacks it."""
        if key not in self._tensors:
            raise KeyError(f"checkpoint {self.source} has no key {key!r}")
        self._taken.add(key)
        return self._tensors[key]

    def put(self, path: str, value: np.ndarray, *keys: str) -> None:
        """Places `value` (made from checkpoint `keys`) at Flax path 'a/b/kernel'."""
        flat_path = tuple(path.split("/"))
        self._flat[flat_path] = np.asarray(value, np.float32)
        self._origin[flat_path] = keys

    def move(self, path: str, key: str) -> None:
        """Flax param `path` <- tensor `key`, transposed when `path` is a Dense kernel."""
        value = self.take(key)
        self.put(path, linear(value) if path.endswith("/kernel") else value, key)

    def fuse(self, path: str, modules: Sequence[str]) -> None:
        """Dense `path` <- torch Linear `modules` stacked along their outputs, in order (e.g.
        Hugging Face's separate query, key, value -> timm's fused qkv)."""
        for leaf, suffix in (("kernel", "weight"), ("bias", "bias")):
            keys = [f"{m}.{suffix}" for m in modules]
            fused = np.concatenate([self.take(k) for k in keys], axis=0)
            self.put(f"{path}/{leaf}", linear(fused) if leaf == "kernel" else fused, *keys)

    def finish(self, expected: PyTree) -> PyTree:
        """The converted nested dict, checked against `expected` (arrays or ShapeDtypeStructs)."""
        unexpected = sorted(
            k
            for k in self._tensors
            if k not in self._taken and not any(p.fullmatch(k) for p in self._ignore)
        )
        if unexpected:
            shown = ", ".join(repr(k) for k in unexpected[:8])
            more = f" and {len(unexpected) - 8} more" if len(unexpected) > 8 else ""
            raise KeyError(
                f"checkpoint {self.source} has unexpected keys {shown}{more}: is it the "
                "architecture the config names?"
            )
        want = traverse_util.flatten_dict(expected)
        for path in want:
            if path not in self._flat:
                raise KeyError(f"checkpoint {self.source} provides nothing for {'/'.join(path)}")
        for path, value in self._flat.items():
            if path not in want:
                raise KeyError(f"converter produced {'/'.join(path)}, which the model lacks")
            shape = tuple(jax.numpy.shape(want[path]))
            if value.shape != shape:
                raise ValueError(
                    f"checkpoint {self.source} key {' + '.join(map(repr, self._origin[path]))} "
                    f"gives shape {value.shape} for {'/'.join(path)}, expected {shape}"
                )
        return traverse_util.unflatten_dict(self._flat)
