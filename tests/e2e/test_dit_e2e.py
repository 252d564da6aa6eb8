"""The DiT rows of Table 1a on the tiny model: its hybrid loss, its training step with SARA,
its denoiser, the Fig. 2 analysis and the sample job (the network and DDPM: unit/test_dit.py)."""

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from helpers import BATCH, STEP, random_encoder
from test_train_step_e2e import global_batch, run_steps

from sara_jax import analysis
from sara_jax.config import set_alignment
from sara_jax.encoders.registry import encoder_width
from sara_jax.evaluation import representations
from sara_jax.objective import diffusion
from sara_jax.objective.family import make_objective
from sara_jax.objective.sara import generator_loss
from sara_jax.sampling import ddpm, denoiser, sample_set
from sara_jax.training.state import build_models, create_train_state

DIT = {"model.family": "dit", "sample.method": "ddpm"}


def init_dit(config):
    """The config's DiT module and its freshly initialised params."""
    sit = build_models(config, 16).sit
    x = jnp.zeros((1, 16, 16, 3))
    init = jax.jit(sit.init)  # Compiled: eager initialisation is slower on CPU.
    return sit, init(jax.random.key(0), x, jnp.zeros(1), jnp.zeros(1, jnp.int32))["params"]


def test_dit_generator_loss_is_the_hybrid_loss_at_the_integer_step(tiny_config):
    config = tiny_config(STEP, DIT)
    set_alignment(config, "none")
    models = build_models(config, 16)
    sit, sit_params = init_dit(config)
    x0 = jnp.asarray(global_batch()["image"], jnp.float32) / 127.5 - 1
    eps = jax.random.normal(jax.random.key(2), x0.shape)
    t = jnp.linspace(0, 999, BATCH).astype(jnp.int32)
    labels = jnp.arange(BATCH) % 11  # with the null label 10
    schedule = diffusion.linear_schedule(1000, 1e-4, 0.02)

    @jax.jit
    def step_loss_and_by_hand(sit_params):
        inputs = {**make_objective(config).network_inputs(x0, eps, t), "labels": labels}
        total, (terms, _) = generator_loss(
            {"sit": sit_params}, None, inputs, models, config, jnp.float32(0)
        )
        x_t = diffusion.q_sample(schedule, x0, t, eps)
        output, _ = sit.apply({"params": sit_params}, x_t, t.astype(jnp.float32), labels)
        return total, terms, diffusion.hybrid_loss(schedule, output, x0, x_t, t, eps), output

    _, _, _, output = step_loss_and_by_hand(sit_params)
    assert output.shape == (BATCH, 16, 16, 6)  # eps and v, 3 channels each
    assert np.all(np.asarray(output) == 0)  # adaLN-Zero: eps 0 and v 0 (the mid log-variance)
    # Away from adaLN-Zero's init, so that every channel of the output matters.
    sit_params = jax.tree.map(
        lambda p: p + 0.05 * jax.random.normal(jax.random.key(1), p.shape), sit_params
    )
    total, terms, (expected, expected_terms), _ = step_loss_and_by_hand(sit_params)
    assert set(terms) == {"mse", "vlb"}
    np.testing.assert_allclose(total, expected, rtol=1e-6)
    np.testing.assert_allclose(terms["vlb"], expected_terms["vlb"], rtol=1e-6)


def test_tiny_dit_with_sara_trains_on_eight_devices(tiny_config):
    assert jax.device_count() >= 8
    config = tiny_config(STEP, DIT)
    states, metrics = run_steps(config, 8, 5)
    assert set(metrics[0]) == {
        "loss", "mse", "vlb", "patch", "struc", "adv", "disc_loss", "disc_acc_real",
        "disc_acc_fake", "grad_norm", "nonfinite",
    }  # fmt: skip
    assert all(m["nonfinite"] == 0 and np.isfinite(m["loss"]) for m in metrics)
    # Steps draw new t and eps; judge the progress on one fixed set of inputs (and D).
    features, enc_params = random_encoder()
    models = build_models(config, 16)
    batch = global_batch()
    x0 = jnp.asarray(batch["image"], jnp.float32) / 127.5 - 1
    eps = jax.random.normal(jax.random.key(3), x0.shape)
    t = jnp.linspace(0, 999, BATCH).astype(jnp.int32)
    inputs = {
        **make_objective(config).network_inputs(x0, eps, t),
        "labels": jnp.asarray(batch["label"]),
        "z_enc": features(enc_params, jnp.asarray(batch["image"])),
    }

    @jax.jit
    def loss(params):
        gamma = jnp.float32(config.loss.adv_weight)
        return generator_loss(params, states[0].disc, inputs, models, config, gamma)

    (before, (terms_before, _)), (after, (terms_after, _)) = (
        loss(states[0].params),
        loss(states[-1].params),
    )
    assert after < before - 0.05, (before, after)
    assert terms_after["mse"] < terms_before["mse"]


def randomized_dit(config):
    """A tiny DiT away from adaLN-Zero's init, so that labels and steps change its output."""
    sit, params = init_dit(config)
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(5), len(leaves))
    noisy = [p + 0.02 * jax.random.normal(k, p.shape) for p, k in zip(leaves, keys, strict=True)]
    return sit, jax.tree.unflatten(treedef, noisy)


def test_denoiser_is_ddpm_on_the_respaced_steps_and_scale_one_is_conditional(tiny_config):
    config = tiny_config(STEP, DIT, **{"sample.cfg_scale": 1.0})
    sit, params = randomized_dit(config)
    noise = jax.random.normal(jax.random.key(6), (4, 16, 16, 3))
    labels, key = jnp.array([0, 3, 5, 9]), jax.random.key(7)
    spaced = diffusion.respace(diffusion.linear_schedule(1000, 1e-4, 0.02), 6)

    @jax.jit
    def conditional_sample(params, noise, labels, key):
        def network(x, t, y):
            return sit.apply({"params": params}, x, t, y)[0]

        return ddpm.ddpm_sample(spaced, network, noise, labels, key)

    # (An untrained DiT's samples are far from [-1, 1]: DDPM divides by sqrt(abar) ~ 0.006 at
    # the first step and DiT does not clip. The same computation still gives the same bits.)
    expected = conditional_sample(params, noise, labels, key)
    denoise = jax.jit(denoiser.make_denoiser(config, sit, num_steps=6))
    np.testing.assert_array_equal(denoise(params, noise, labels, key), expected)
    config.sample.cfg_scale = 4.0
    guided = jax.jit(denoiser.make_denoiser(config, sit, num_steps=6))(params, noise, labels, key)
    assert float(jnp.abs(guided - expected).max()) > 1e-3


def save_initial_state(config, workdir, step: int) -> None:
    """A freshly initialised TrainState of `config`, checkpointed as step `step` of workdir."""
    models = build_models(config, encoder_width(config.encoder))
    state = jax.jit(lambda key: create_train_state(config, models, 16, key))(jax.random.key(0))
    manager = ocp.CheckpointManager(workdir / "checkpoints")
    manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state)))
    manager.wait_until_finished()


def test_fig2_representations_of_a_dit_see_its_integer_step(tmp_path, monkeypatch, tiny_config):
    config = tiny_config(
        STEP,
        DIT,
        **{
            "encoder.pretrain.steps": 2,
            "encoder.pretrain.num_examples": 64,
            "encoder.pretrain.batch_size": 32,
            "encoder.pretrain.cache_dir": str(tmp_path / "cache"),
        },
    )
    save_initial_state(config, tmp_path, step=1)
    seen = []
    original = make_objective

    def recording(config):
        objective = original(config)

        def network_inputs(x0, eps, t):
            seen.append(t)
            return objective.network_inputs(x0, eps, t)

        return objective._replace(network_inputs=network_inputs)

    monkeypatch.setattr(representations, "make_objective", recording)
    reps, _, step = analysis.representations(config, str(tmp_path), num_images=3, t=0.5)
    assert step == 1 and reps["h_den"].shape == (3, 16, 16) and reps["z_den"].shape == (3, 16, 32)
    # t = 0.5 of the way to noise is step round(0.5 * 999) = 500 for the DiT.
    assert seen[0].dtype == jnp.int32 and np.all(np.asarray(seen[0]) == 500)


def test_sample_job_writes_the_evaluation_npz_for_a_dit(tmp_path, tiny_config):
    config = tiny_config(
        STEP,
        DIT,
        **{
            "sample.num_samples": 10,
            "sample.batch_size": 8,
            "sample.num_steps": 4,
            "sample.labels": "balanced",
            "sample.cfg_scale": 1.5,
        },
    )
    save_initial_state(config, tmp_path, step=3)
    path = sample_set.sample_set(config, str(tmp_path), 0, 1)
    name = sample_set.set_name(sample_set.set_settings(config, 3))
    assert name.startswith("samples_3_ddpm4_cfg1.5_")
    assert str(path) == str(tmp_path / name / "samples.npz")
    out = np.load(path)
    assert out["arr_0"].shape == (10, 16, 16, 3) and out["arr_0"].dtype == np.uint8
    np.testing.assert_array_equal(out["arr_1"], np.arange(10) % 10)
