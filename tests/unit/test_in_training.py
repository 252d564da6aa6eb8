"""The in-training FID: which samples each process draws, that it needs a reference, and where
SIGTERM abandons it (its value and the train loop's `fid` logs: e2e/test_in_training_e2e.py;
a chunk abandoned while drawn: e2e/test_sample.py)."""

import os
import re
import signal

import numpy as np
import pytest
from helpers import EVAL, STEP

from sara_jax.config import validate
from sara_jax.evaluation import in_training
from sara_jax.io import preemption
from sara_jax.sampling.sample_set import ChunkSampler


@pytest.fixture
def sigterm_caught():
    """preemption's SIGTERM handler for one test; the previous handler and a clear flag after."""
    previous = signal.getsignal(signal.SIGTERM)
    preemption.install()
    yield
    signal.signal(signal.SIGTERM, previous)
    preemption._signalled.clear()


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


def test_sigterm_abandons_the_evaluation_before_it_draws(tiny_config, sigterm_caught):
    featurized = []
    monitor = in_training.make_monitor(tiny_config(STEP, EVAL), featurized.append, lambda f, y: {})
    os.kill(os.getpid(), signal.SIGTERM)
    with pytest.raises(preemption.Preempted, match=re.escape(in_training.ABANDONED)):
        monitor({})  # No params needed: nothing is drawn.
    assert not featurized


def test_sigterm_during_a_chunk_abandons_the_evaluation_before_the_next(
    tiny_config, sigterm_caught, monkeypatch
):
    drawn = []

    def draw(params, indices, saved=None):
        drawn.append(saved)  # The real draw's preemption.wait abandons the chunk with it.
        return np.zeros((len(indices), 4, 4, 3), np.uint8), indices % 10

    def featurize(images: np.ndarray) -> dict[str, np.ndarray]:
        os.kill(os.getpid(), signal.SIGTERM)
        return {"features": images}

    fake = ChunkSampler(place=lambda params: params, draw=draw)
    monkeypatch.setattr(in_training, "make_chunk_sampler", lambda config, num_steps: fake)
    monitor = in_training.make_monitor(tiny_config(STEP, EVAL), featurize, lambda f, y: {})
    with pytest.raises(preemption.Preempted, match=re.escape(in_training.ABANDONED)):
        monitor({})  # Two chunks: 12 samples of 8.
    assert drawn == [in_training.ABANDONED]
