"""Pretraining the demo encoder: a classifier far above chance, cached by what determines it
(its errors: unit/test_encoder_pretrain.py)."""

import jax
import numpy as np
from helpers import PRETRAIN

from sara_jax.data.shapes import ShapesSource
from sara_jax.encoders.pretrain import pretrain_demo_vit, pretrained_demo_vit


def test_pretraining_makes_a_classifier_far_above_chance(tmp_path, tiny_config):
    c = tiny_config(PRETRAIN, **{"encoder.pretrain.cache_dir": str(tmp_path)})
    params, accuracy = pretrain_demo_vit(c, ShapesSource(1024, 32, 10, seed=0))
    assert accuracy > 0.5  # chance is 0.1
    assert params["pos_embed"].shape == (1, 1 + 64, 32)


def test_weights_are_cached_and_keyed_by_what_determines_them(tmp_path, tiny_config):
    c = tiny_config(PRETRAIN, **{"encoder.pretrain.cache_dir": str(tmp_path)})
    c.encoder.pretrain.steps = 3
    source = ShapesSource(1024, 32, 10, seed=0)
    first = pretrained_demo_vit(c, source)
    files = list(tmp_path.iterdir())
    assert len(files) == 1 and files[0].suffix == ".msgpack"
    again = pretrained_demo_vit(c, source)
    for a, b in zip(jax.tree.leaves(first), jax.tree.leaves(again), strict=True):
        np.testing.assert_array_equal(a, b)
    c.encoder.pretrain.lr = 2e-3
    pretrained_demo_vit(c, source)
    assert len(list(tmp_path.iterdir())) == 2
