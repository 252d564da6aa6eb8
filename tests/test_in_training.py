"""The in-training FID: the sample set it scores, its value, and the train loop's `fid` logs."""

from pathlib import Path

import jax
import numpy as np
import pytest
import tensorflow as tf
from test_evaluate import fake_featurize, symmetric_sqrtm
from test_train_step import tiny_config

from sara_jax.config import validate
from sara_jax.evaluation import in_training, metrics
from sara_jax.sampling.sample_set import make_chunk_sampler
from sara_jax.training import loop
from sara_jax.training.state import build_models, create_train_state


@pytest.mark.parametrize("num_samples, chunk, count", [(20, 4, 3), (8, 8, 1), (5, 2, 2)])
def test_process_indices_cover_the_set_once_in_order(num_samples, chunk, count):
    rows = [in_training.process_indices(num_samples, chunk, p, count) for p in range(count)]
    assert len({r.shape for r in rows}) == 1 and rows[0].shape[1] == chunk
    gathered = np.stack(rows).swapaxes(0, 1).reshape(-1)
    np.testing.assert_array_equal(gathered[:num_samples], np.arange(num_samples))


def eval_config(**overrides):
    return tiny_config(
        **{
            "sample.batch_size": 8,
            "sample.method": "sde",
            "eval.num_samples": 12,
            "eval.num_steps": 2,
            **overrides,
        }
    )


def test_fid_scores_exactly_the_samples_the_sample_job_draws(monkeypatch):
    monkeypatch.setattr(metrics.linalg, "sqrtm", symmetric_sqrtm)
    config = eval_config()
    models = build_models(config, 16)
    sit_params = create_train_state(config, models, 16, jax.random.key(0)).params["sit"]
    # Samples 0..11 as the sample job draws them, in two chunks.
    sampler = make_chunk_sampler(config, num_steps=2)
    placed = sampler.place(sit_params)
    images = np.concatenate(
        [sampler.draw(placed, np.arange(8))[0], sampler.draw(placed, np.arange(8, 12))[0]]
    )
    pool3 = fake_featurize(images)["pool3"]
    reference = metrics.feature_stats(fake_featurize(images[::-1].copy())["pool3"][:10])

    monitor = in_training.make_fid_monitor(config, fake_featurize, reference)
    value = monitor(sit_params)["fid"]
    np.testing.assert_allclose(value, metrics.fid(pool3, reference), rtol=1e-6)
    # A set with repeats (16 = 12 padded) would score differently.
    assert abs(metrics.fid(np.resize(pool3, (16, 2048)), reference) - value) > 1e-3 * value
    # Against its own statistics the set scores ~0.
    own = in_training.make_fid_monitor(config, fake_featurize, metrics.feature_stats(pool3))
    assert abs(own(sit_params)["fid"]) < 1e-4 * value  # 12 points in 2048-d: singular covariances


def test_eval_needs_a_reference():
    config = eval_config()
    config.eval.every = 10
    with pytest.raises(ValueError, match=r"config\.eval\.reference must be a path"):
        validate(config)


def scalars(workdir: Path, tag: str) -> dict[int, float]:
    """{step: value} of a scalar tag in the TensorBoard event files under workdir."""
    out = {}
    for path in workdir.glob("events.out.tfevents.*"):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                if value.tag == tag:
                    out[event.step] = float(tf.make_ndarray(value.tensor))
    return out


def test_the_train_loop_logs_fid_every_k_steps(tmp_path, monkeypatch):
    images = np.random.default_rng(0).integers(0, 256, (16, 16, 16, 3), dtype=np.uint8)
    np.savez(tmp_path / "reference.npz", arr_0=images)
    config = eval_config(
        **{
            "eval.every": 2,
            "eval.reference": str(tmp_path / "reference.npz"),
            "train.num_steps": 4,
            "train.checkpoint_every": 4,
            "data.num_examples": 640,
            "encoder.pretrain.steps": 2,
            "encoder.pretrain.num_examples": 64,
            "encoder.pretrain.batch_size": 32,
            "encoder.pretrain.cache_dir": str(tmp_path / "cache"),
            # The hook does not depend on the objective: REPA's compiles faster.
            "loss.struc_weight": 0.0,
            "loss.adv_weight": 0.0,
        }
    )
    monkeypatch.setattr(in_training, "inception_featurizer", lambda config: fake_featurize)
    loop.train_and_evaluate(config, str(tmp_path / "run"))
    fid = scalars(tmp_path / "run", "fid")
    assert sorted(fid) == [2, 4] and all(np.isfinite(v) and v > 0 for v in fid.values())
