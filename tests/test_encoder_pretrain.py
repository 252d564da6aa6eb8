import jax
import numpy as np
import pytest

from configs import demo
from sara_jax.data.shapes import ShapesSource
from sara_jax.encoders.pretrain import pretrain_demo_vit, pretrained_demo_vit


def small_config(tmp_path):
    c = demo.get_config()
    c.encoder.arch.embed_dim = 32
    c.encoder.arch.depth = 1
    c.encoder.arch.num_heads = 2
    c.encoder.pretrain.steps = 60
    c.encoder.pretrain.batch_size = 64
    c.encoder.pretrain.num_examples = 512
    c.encoder.pretrain.cache_dir = str(tmp_path)
    c.data.num_examples = 1024
    return c


def test_pretraining_makes_a_classifier_far_above_chance(tmp_path):
    c = small_config(tmp_path)
    params, accuracy = pretrain_demo_vit(c, ShapesSource(1024, 32, 10, seed=0))
    assert accuracy > 0.5  # chance is 0.1
    assert params["pos_embed"].shape == (1, 1 + 64, 32)


def test_weights_are_cached_and_keyed_by_what_determines_them(tmp_path):
    c = small_config(tmp_path)
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


def test_no_held_out_records_is_an_error(tmp_path):
    c = small_config(tmp_path)
    c.data.num_examples = 512
    with pytest.raises(ValueError, match="encoder.pretrain.num_examples"):
        pretrain_demo_vit(c, ShapesSource(512, 32, 10, seed=0))
