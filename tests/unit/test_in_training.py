"""The in-training FID: which samples each process draws, and that it needs a reference (its
value and the train loop's `fid` logs: e2e/test_in_training_e2e.py)."""

import numpy as np
import pytest
from helpers import EVAL, STEP

from sara_jax.config import validate
from sara_jax.evaluation import in_training


@pytest.mark.parametrize("num_samples, chunk, count", [(20, 4, 3), (8, 8, 1), (5, 2, 2)])
def test_process_indices_cover_the_set_once_in_order(num_samples, chunk, count):
    rows = [in_training.process_indices(num_samples, chunk, p, count) for p in range(count)]
    assert len({r.shape for r in rows}) == 1 and rows[0].shape[1] == chunk
    gathered = np.stack(rows).swapaxes(0, 1).reshape(-1)
    np.testing.assert_array_equal(gathered[:num_samples], np.arange(num_samples))


def test_eval_needs_a_reference(tiny_config):
    config = tiny_config(STEP, EVAL)
    config.eval.every = 10
    with pytest.raises(ValueError, match=r"config\.eval\.reference must be a path"):
        validate(config)
