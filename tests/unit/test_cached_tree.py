"""io/files.cached_tree: the caches of pretrained weights, and what it does with a bad one (the
callers' rebuilds: test_encoder_pretrain.py, e2e/test_shapes_evaluator.py)."""

import hashlib
import logging

import jax
import numpy as np
import pytest
from flax import serialization

from sara_jax.io import files

TEMPLATE = {
    "w": jax.ShapeDtypeStruct((3, 4), np.float32),
    "b": jax.ShapeDtypeStruct((4,), np.float32),
    "accuracy": 0.0,
}


def built() -> dict:
    return {
        "w": np.arange(12, dtype=np.float32).reshape(3, 4),
        "b": np.ones(4, np.float32),
        "accuracy": 0.75,
    }


def load(path, calls: list) -> dict:
    def build():
        calls.append(1)
        return built()

    return files.cached_tree(path, TEMPLATE, build, "test weights")


def assert_trees_equal(a, b) -> None:
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(x, y)


def test_built_once_then_read(tmp_path):
    path, calls = tmp_path / "sub" / "w.msgpack", []
    first = load(path, calls)
    again = load(path, calls)
    assert calls == [1] and sorted(p.name for p in path.parent.iterdir()) == ["w.msgpack"]
    assert_trees_equal(first, again)


def truncate(data: bytes) -> bytes:
    return data[: len(data) // 2]


def flip_last_float(data: bytes) -> bytes:
    # The trees' last bytes are array data, which msgpack alone would read without complaint.
    return data[:-2] + bytes([data[-2] ^ 0x01]) + data[-1:]


def other_tree(_: bytes) -> bytes:
    """A sound cache file of another tree."""
    other = serialization.to_bytes({"w": np.zeros((2, 2))})
    stored = {"sha256": hashlib.sha256(other).hexdigest(), "tree": other}
    return serialization.msgpack_serialize(stored)


@pytest.mark.parametrize(
    ("spoil", "reason"),
    [
        (truncate, "Unpack failed: incomplete input"),
        (flip_last_float, "its checksum does not match its content"),
        (lambda _: b"", "Unpack failed: incomplete input"),
        (other_tree, "The target dict keys and state dict keys do not match"),
        # A cache written before the checksum: the plain msgpack of the tree.
        (lambda _: serialization.to_bytes(built()), "it lacks the sha256 this version stores"),
    ],
)
def test_a_bad_cache_is_named_rebuilt_and_overwritten(tmp_path, caplog, spoil, reason):
    path, calls = tmp_path / "w.msgpack", []
    load(path, calls)
    good = path.read_bytes()
    path.write_bytes(spoil(good))
    with caplog.at_level(logging.WARNING):
        rebuilt = load(path, calls)
    assert calls == [1, 1]
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert f"test weights: the cache {path} cannot be used ({reason}" in warning
    assert warning.endswith("rebuilding it and overwriting the file")
    assert_trees_equal(rebuilt, built())
    assert path.read_bytes() == good


def test_a_leaf_of_another_shape_is_refused(tmp_path, caplog):
    path = tmp_path / "w.msgpack"
    files.cached_tree(path, {**TEMPLATE, "b": jax.ShapeDtypeStruct((5,), np.float32)},
                      lambda: {**built(), "b": np.ones(5, np.float32)}, "test weights")  # fmt: skip
    calls = []
    with caplog.at_level(logging.WARNING):
        load(path, calls)
    assert calls == [1]
    assert "['b'] is float32 (5,), expected float32 (4,)" in caplog.text
