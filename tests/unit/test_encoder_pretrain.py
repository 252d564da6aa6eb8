"""The demo encoder's pretraining: its errors, a damaged cache, SIGTERM (the pretraining
itself: e2e/test_encoder_pretrain_e2e.py; SIGTERM through the CLI:
e2e/test_pretrain_preemption.py)."""

import logging

import jax
import numpy as np
import pytest
from helpers import PRETRAIN

from sara_jax.data.shapes import ShapesSource
from sara_jax.encoders.pretrain import pretrain_demo_vit, pretrained_demo_vit
from sara_jax.io import preemption


def test_no_held_out_records_is_an_error(tmp_path, tiny_config):
    c = tiny_config(PRETRAIN, **{"encoder.pretrain.cache_dir": str(tmp_path)})
    c.data.num_examples = 512
    with pytest.raises(ValueError, match="encoder.pretrain.num_examples"):
        pretrain_demo_vit(c, ShapesSource(512, 32, 10, seed=0))


# Two steps on 64 records, 32 held out: seconds, and as determined by the config as any run.
QUICK = {"encoder.pretrain.steps": 2, "encoder.pretrain.num_examples": 64,
         "encoder.pretrain.batch_size": 32, "data.num_examples": 96}  # fmt: skip


def test_a_truncated_cache_is_named_and_rebuilt_as_it_was(tmp_path, tiny_config, caplog):
    c = tiny_config(PRETRAIN, QUICK, **{"encoder.pretrain.cache_dir": str(tmp_path)})
    source = ShapesSource(96, 32, 10, seed=0)
    first = pretrained_demo_vit(c, source)
    (path,) = tmp_path.iterdir()
    good = path.read_bytes()
    path.write_bytes(good[: len(good) // 2])  # As a copy cut short would leave it.
    with caplog.at_level(logging.WARNING):
        rebuilt = pretrained_demo_vit(c, source)
    assert f"demo encoder: the cache {path} cannot be used (Unpack failed" in caplog.text
    assert "rebuilding it and overwriting the file" in caplog.text
    assert path.read_bytes() == good
    for a, b in zip(jax.tree.leaves(first), jax.tree.leaves(rebuilt), strict=True):
        np.testing.assert_array_equal(a, b)


def test_sigterm_stops_the_pretraining_at_a_step_boundary_and_caches_nothing(
    tmp_path, tiny_config, monkeypatch
):
    c = tiny_config(PRETRAIN, QUICK, **{"encoder.pretrain.cache_dir": str(tmp_path / "cache")})
    asked = []

    def requested() -> bool:  # SIGTERM arrives during the first of the two steps.
        asked.append(1)
        return len(asked) == 2

    monkeypatch.setattr(preemption, "requested", requested)
    with pytest.raises(preemption.Preempted) as stop:
        pretrained_demo_vit(c, ShapesSource(96, 32, 10, seed=0))
    assert str(stop.value) == (
        "demo encoder pretraining stopped at step 1/2; nothing is cached yet, so the rerun "
        "starts it again"
    )
    assert not (tmp_path / "cache").exists()
