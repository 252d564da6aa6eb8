"""The demo encoder's pretraining: its errors (the pretraining itself:
e2e/test_encoder_pretrain_e2e.py)."""

import pytest
from helpers import PRETRAIN

from sara_jax.data.shapes import ShapesSource
from sara_jax.encoders.pretrain import pretrain_demo_vit


def test_no_held_out_records_is_an_error(tmp_path, tiny_config):
    c = tiny_config(PRETRAIN, **{"encoder.pretrain.cache_dir": str(tmp_path)})
    c.data.num_examples = 512
    with pytest.raises(ValueError, match="encoder.pretrain.num_examples"):
        pretrain_demo_vit(c, ShapesSource(512, 32, 10, seed=0))
