"""The in-training FID on the tiny model: the sample set it scores, its value, and the train
loop's `fid` logs."""

from pathlib import Path

import jax
import numpy as np
from helpers import EVAL, STEP, fake_featurize, symmetric_sqrtm

from sara_jax.data.pipeline import make_source
from sara_jax.encoders.load import load_encoder
from sara_jax.evaluation import in_training, metrics
from sara_jax.io.events import read_scalars
from sara_jax.sampling.sample_set import make_chunk_sampler
from sara_jax.training import loop
from sara_jax.training.state import build_models, create_train_state


def test_fid_scores_exactly_the_samples_the_sample_job_draws(monkeypatch, tiny_config):
    monkeypatch.setattr(metrics.linalg, "sqrtm", symmetric_sqrtm)
    config = tiny_config(STEP, EVAL)
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


def scalars(workdir: Path, tag: str) -> dict[int, float]:
    """{step: value} of a scalar tag in the TensorBoard event files under workdir."""
    steps, values = read_scalars(str(workdir)).get(tag, ([], []))
    return dict(zip(np.asarray(steps).tolist(), np.asarray(values).tolist(), strict=True))


def test_the_train_loop_logs_fid_every_k_steps(tmp_path, monkeypatch, tiny_config):
    images = np.random.default_rng(0).integers(0, 256, (16, 16, 16, 3), dtype=np.uint8)
    np.savez(tmp_path / "reference.npz", arr_0=images)
    config = tiny_config(
        STEP,
        EVAL,
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
        },
    )
    monkeypatch.setattr(in_training, "inception_featurizer", lambda config: fake_featurize)
    state = loop.train_and_evaluate(config, str(tmp_path / "run"))
    fid = scalars(tmp_path / "run", "fid")
    assert sorted(fid) == [2, 4] and all(np.isfinite(v) and v > 0 for v in fid.values())

    # Beside the FID, the aligned tokens' spatial structure and structural gap, measured on the
    # weights the samples came from: step 4's are those of the state the run ended with.
    source = make_source(config.data)
    encoder = load_encoder(config, source)
    measure = in_training.make_structure_monitor(
        config, build_models(config, encoder.z_dim), encoder, source
    )
    expected = measure(jax.device_get(state.ema_params))
    assert "spatial/h_den/srss" in expected and "struc_gap/z_den" in expected
    for tag, value in expected.items():
        logged = scalars(tmp_path / "run", tag)
        assert sorted(logged) == [2, 4], tag
        np.testing.assert_allclose(logged[4], value, rtol=1e-5, atol=1e-6, err_msg=tag)
