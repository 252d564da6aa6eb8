"""Shipped instruments: the demo encoder and shapes evaluator files that every machine reads
instead of training its own, checked by sha256, and the command's rules for adding one."""

import json

import numpy as np
import pytest

from configs import demo, shapes_study
from sara_jax.encoders import pretrain
from sara_jax.evaluation import shapes
from sara_jax.io import environment, files, instruments
from sara_jax.io.errors import InputError

TEMPLATE = {"w": np.zeros((3, 4), np.float32), "accuracy": 0.0}


def never() -> dict:
    raise AssertionError("a shipped instrument was rebuilt")


@pytest.fixture
def folder(tmp_path, monkeypatch):
    """An empty instruments folder of the test's own."""
    shipped = tmp_path / "instruments"
    monkeypatch.setattr(instruments, "FOLDER", shipped)
    monkeypatch.setattr(instruments, "MANIFEST", shipped / "manifest.json")
    return shipped


def cached(tmp_path, value: float, where: str = "cache"):
    """A cache file in `tmp_path / where`, as `files.cached_tree` writes it, holding `value`."""
    path = tmp_path / where / "thing-0123456789abcdef.msgpack"
    tree = {"w": np.full((3, 4), value, np.float32), "accuracy": value}
    files.cached_tree(path, TEMPLATE, lambda: tree, "thing")
    return path


def test_a_pinned_file_is_read_instead_of_built_and_listed_with_its_machine(folder, tmp_path):
    path = cached(tmp_path, 2.5)
    info = {"environment": environment.environment()}
    target = instruments.pin(path, "thing", "python -m sara_jax.pin --config=x.py", info)
    assert target == folder / path.name
    entry = instruments.manifest()[path.name]
    assert entry["sha256"] == files.sha256(path) and entry["what"] == "thing"
    assert entry["environment"]["devices"] >= 1 and entry["environment"]["packages"]["jax"]
    # Another cache directory, another machine: the shipped file, not a rebuild.
    tree = instruments.shipped_or_cached(tmp_path / "elsewhere" / path.name, TEMPLATE, never, "t")
    np.testing.assert_array_equal(tree["w"], np.full((3, 4), 2.5, np.float32))
    assert not (tmp_path / "elsewhere").exists()


def test_a_config_without_a_shipped_file_builds_and_caches_its_own(folder, tmp_path):
    built = {"w": np.ones((3, 4), np.float32), "accuracy": 1.0}
    path = tmp_path / "cache" / "other-0123456789abcdef.msgpack"
    tree = instruments.shipped_or_cached(path, TEMPLATE, lambda: built, "other")
    np.testing.assert_array_equal(tree["w"], built["w"])
    assert path.exists() and not folder.exists()


def test_a_damaged_or_unlisted_shipped_file_is_refused_never_rebuilt(folder, tmp_path):
    path = cached(tmp_path, 1.0)
    target = instruments.pin(path, "thing", "cmd", {})
    data = bytearray(target.read_bytes())
    data[-5] ^= 0xFF
    target.write_bytes(bytes(data))
    with pytest.raises(InputError, match=f"{target.name} is not the sha256 listed in manifest"):
        instruments.shipped_or_cached(path, TEMPLATE, never, "thing")
    instruments.MANIFEST.write_text("{}")
    with pytest.raises(InputError, match="is not listed in manifest.json; restore it"):
        instruments.shipped_or_cached(path, TEMPLATE, never, "thing")


def test_pinning_never_replaces_a_shipped_file_that_differs(folder, tmp_path):
    instruments.pin(cached(tmp_path, 1.0), "thing", "cmd", {})
    same = cached(tmp_path, 1.0, "another_machine")
    again = instruments.pin(same, "thing", "cmd", {})  # The same bytes: fine.
    with pytest.raises(InputError, match="results were read with the shipped one"):
        instruments.pin(cached(tmp_path, 3.0, "a_third"), "thing", "cmd", {})
    assert files.sha256(again) == instruments.manifest()[again.name]["sha256"]


@pytest.mark.parametrize("config", [demo.get_config(), shapes_study.get_config()])
def test_the_demo_and_the_study_read_shipped_instruments(config):
    """Both configs' encoder and evaluator are files of the repository, intact, so every
    machine measures with the same ones (the study's numbers hold across machines)."""
    listed = json.loads(instruments.MANIFEST.read_text())
    for path in (pretrain.cache_path(config), shapes.cache_path(config.eval.shapes, config.data)):
        assert path.name in listed, f"{path.name} is not shipped: python -m sara_jax.pin"
        shipped = instruments.FOLDER / path.name
        assert files.sha256(shipped) == listed[path.name]["sha256"]
        assert listed[path.name]["command"].startswith("python -m sara_jax.pin")


def test_a_study_seed_does_not_change_the_demo_encoder():
    a, b = demo.get_config(), demo.get_config()
    b.seed = 7
    assert pretrain.cache_path(a) == pretrain.cache_path(b)
    b.encoder.pretrain.seed = 1
    assert pretrain.cache_path(a) != pretrain.cache_path(b)
