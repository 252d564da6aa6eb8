"""The train step on the tiny model, compiled whole: sharding, the D schedule, the terms,
gradients, EMA, accumulation, remat and non-finite batches (tens of seconds each)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from helpers import BATCH, STEP, random_encoder
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from sara_jax.config import set_alignment, validate
from sara_jax.data.shapes import ShapesSource
from sara_jax.encoders.preprocess import imagenet_normalize
from sara_jax.models.dinov2 import DinoV2
from sara_jax.objective import transport
from sara_jax.objective.sara import generator_loss
from sara_jax.training.sharding import data_mesh
from sara_jax.training.state import build_models, create_train_state
from sara_jax.training.step import make_train_step


def global_batch():
    source = ShapesSource(BATCH, image_size=16, num_classes=10, seed=3)
    records = [source[i] for i in range(BATCH)]
    return {k: np.stack([r[k] for r in records]) for k in records[0]}


def run_steps(config, num_devices, num_steps, disc_gate=None):
    """Runs the step on the first num_devices devices; returns every state and metric."""
    mesh = data_mesh(jax.devices()[:num_devices])
    features, enc_params = random_encoder()
    models = build_models(config, 16)
    state = create_train_state(config, models, 16, jax.random.key(0))
    state = jax.device_put(state, NamedSharding(mesh, P()))
    batch = jax.device_put(global_batch(), NamedSharding(mesh, P("data")))
    step = make_train_step(config, models, features, mesh, disc_gate=disc_gate)
    states, metrics = [jax.device_get(state)], []
    for _ in range(num_steps):
        state, m = step(state, batch, jax.device_put(enc_params, NamedSharding(mesh, P())))
        states.append(jax.device_get(state))
        metrics.append(jax.device_get(m))
    return states, metrics


def assert_trees_close(a, b, **tol):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(x, y, **tol)


@pytest.mark.parametrize("bn_mode", ["frozen", "train"])
def test_eight_devices_match_one_device(bn_mode, tiny_config):
    assert jax.device_count() >= 8, (
        "tests expect XLA_FLAGS=--xla_force_host_platform_device_count=8"
    )
    # Adam with eps 1e-8 turns float reduction-order noise on near-zero gradients into
    # lr-sized steps; eps 1e-3 keeps the comparison about the sharding, not that amplification.
    config = tiny_config(
        STEP, **{"disc.bn_mode": bn_mode, "optim.eps": 1e-3, "disc.optim.eps": 1e-3}
    )
    states1, metrics1 = run_steps(config, 1, 2)
    states8, metrics8 = run_steps(config, 8, 2)
    for m1, m8 in zip(metrics1, metrics8, strict=True):
        assert_trees_close(m1, m8, rtol=1e-4, atol=1e-6)
    # Train-mode BN's variance over pmean-ed moments adds float noise to D's gradients; a
    # sharding bug would move params by ~lr (5e-4), not by a tenth of it.
    assert_trees_close(states1[-1], states8[-1], rtol=1e-4, atol=5e-5)


@pytest.mark.parametrize("disc_gate", ["mask", "cond"])
def test_discriminator_updates_exactly_when_step_mod_every_is_zero(disc_gate, tiny_config):
    config = tiny_config(STEP, **{"disc.every": 3})
    states, _ = run_steps(config, 2, 5, disc_gate=disc_gate)
    for step in range(5):
        before, after = states[step], states[step + 1]
        d_changed = any(
            not np.array_equal(x, y)
            for x, y in zip(jax.tree.leaves(before.disc), jax.tree.leaves(after.disc), strict=True)
        )
        assert d_changed == (step % 3 == 0), step
        assert int(after.disc_opt_state[1][0].count) == step // 3 + 1
        # The generator moves every step.
        assert not np.array_equal(
            before.params["projector"]["fc3"]["kernel"], after.params["projector"]["fc3"]["kernel"]
        )


def test_discriminator_update_does_not_depend_on_gamma(tiny_config):
    # During the warm-up gamma is 0 but D still learns, exactly as it would with gamma on.
    with_adv, _ = run_steps(tiny_config(STEP), 1, 1)
    warmup, _ = run_steps(tiny_config(STEP, **{"loss.adv_warmup_steps": 1}), 1, 1)
    assert_trees_close(with_adv[1].disc, warmup[1].disc, rtol=0, atol=0)
    assert not np.allclose(
        with_adv[1].params["projector"]["fc1"]["kernel"],
        warmup[1].params["projector"]["fc1"]["kernel"],
    )


@pytest.mark.parametrize(
    "terms, logged",
    [
        ("patch", {"velocity", "patch"}),  # REPA: no D.
        ("patch,struc", {"velocity", "patch", "struc"}),
        ("none", {"velocity"}),  # A plain SiT: no encoder, projector or D.
    ],
)
def test_terms_switched_off_are_not_computed(terms, logged, tiny_config):
    config = tiny_config(STEP)
    set_alignment(config, terms)
    mesh = data_mesh(jax.devices()[:1])
    features, enc_params = random_encoder()
    if terms == "none":

        def features(params, images):
            raise AssertionError("the encoder ran for a plain SiT")

    models = build_models(config, 16)
    state = create_train_state(config, models, 16, jax.random.key(0))
    before = jax.device_get(state)
    step = make_train_step(config, models, features, mesh)
    state, metrics = step(state, jax.device_put(global_batch()), enc_params)
    metrics, after = jax.device_get((metrics, state))
    assert set(metrics) == logged | {"loss", "grad_norm", "nonfinite"}
    lc = config.loss
    expected = sum(
        w * metrics.get(k, 0.0)
        for k, w in [("velocity", 1.0), ("patch", lc.patch_weight), ("struc", lc.struc_weight)]
    )
    np.testing.assert_allclose(metrics["loss"], expected, rtol=1e-6)
    assert_trees_close(after.disc, before.disc, rtol=0, atol=0)
    assert_trees_close(after.disc_opt_state, before.disc_opt_state, rtol=0, atol=0)
    projector_moved = not np.array_equal(
        after.params["projector"]["fc3"]["kernel"], before.params["projector"]["fc3"]["kernel"]
    )
    assert projector_moved == (terms != "none")


def test_adversarial_gradient_reaches_sit_and_projector_only_through_h_den(tiny_config):
    config = tiny_config(STEP)
    features, enc_params = random_encoder()
    models = build_models(config, 16)
    state = create_train_state(config, models, 16, jax.random.key(0))
    batch = global_batch()
    x0 = jnp.asarray(batch["image"], jnp.float32) / 127.5 - 1
    eps = jax.random.normal(jax.random.key(1), x0.shape)
    t = jnp.linspace(0.1, 0.9, BATCH)
    inputs = {
        "x_t": transport.interpolate(x0, eps, t),
        "t": t,
        "labels": jnp.asarray(batch["label"]),
        "target": transport.velocity_target(x0, eps),
        "z_enc": features(enc_params, jnp.asarray(batch["image"])),
    }

    def adv_term(params, disc):
        return generator_loss(params, disc, inputs, models, config, jnp.float32(1.0))[1][0]["adv"]

    g_params, g_disc = jax.grad(adv_term, argnums=(0, 1))(state.params, state.disc)
    norm = optax.tree.norm
    assert norm(g_params["projector"]) > 0
    assert norm(g_params["sit"]["x_embedder"]) > 0
    # Blocks after encoder_depth and the output layer do not shape h_den.
    assert norm(g_params["sit"]["blocks_2"]) == 0
    assert norm(g_params["sit"]["final_layer"]) == 0
    assert norm(g_disc["params"]) > 0  # ... which is why the step never applies it to D.


def test_ema_and_metrics(tiny_config):
    config = tiny_config(STEP)
    states, metrics = run_steps(config, 1, 1)
    expected = jax.tree.map(lambda e, p: 0.9 * e + 0.1 * p, states[0].ema_params, states[1].params)
    assert_trees_close(states[1].ema_params, expected, rtol=1e-6, atol=1e-7)
    m = metrics[0]
    assert set(m) == {
        "loss", "velocity", "patch", "struc", "adv", "disc_loss", "disc_acc_real",
        "disc_acc_fake", "grad_norm", "nonfinite",
    }  # fmt: skip
    assert all(np.isfinite(v) for v in m.values()) and m["nonfinite"] == 0
    lc = config.loss
    np.testing.assert_allclose(
        m["loss"],
        m["velocity"]
        + lc.patch_weight * m["patch"]
        + lc.struc_weight * m["struc"]
        + lc.adv_weight * m["adv"],
        rtol=1e-5,
    )
    # At init the SiT predicts exactly 0, so L_velocity = E[(eps - x0)^2].
    assert 1.0 < m["velocity"] < 3.0
    assert int(states[1].step) == 1


def test_adversarial_warmup_switches_gamma_off(tiny_config):
    warm, warm_metrics = run_steps(tiny_config(STEP, **{"loss.adv_warmup_steps": 1}), 1, 1)
    off, off_metrics = run_steps(tiny_config(STEP, **{"loss.adv_weight": 0.0}), 1, 1)
    # The same objective; gamma * L_adv with gamma = 0 only reorders float sums (a live L_adv
    # would move the params by ~lr = 5e-4).
    assert_trees_close(warm[1].params, off[1].params, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(warm_metrics[0]["loss"], off_metrics[0]["loss"], rtol=1e-7)


def test_gradient_accumulation_equals_one_full_batch(tiny_config):
    overrides = {"optim.eps": 1e-3, "disc.optim.eps": 1e-3}
    full_states, full_metrics = run_steps(tiny_config(STEP, overrides), 2, 1)
    accum = tiny_config(STEP, overrides, **{"train.grad_accum_steps": 2})
    validate(accum, num_devices=2)
    accum_states, accum_metrics = run_steps(accum, 2, 1)
    assert_trees_close(full_metrics, accum_metrics, rtol=1e-4, atol=1e-6)
    assert_trees_close(full_states[-1], accum_states[-1], rtol=1e-4, atol=5e-5)


def test_remat_gives_the_same_loss_and_update(tiny_config):
    plain_states, plain_metrics = run_steps(tiny_config(STEP), 1, 1)
    remat_states, remat_metrics = run_steps(tiny_config(STEP, **{"model.remat": True}), 1, 1)
    assert_trees_close(plain_metrics, remat_metrics, rtol=1e-6, atol=1e-7)
    assert_trees_close(plain_states[-1].params, remat_states[-1].params, rtol=1e-5, atol=1e-7)


def latent_setup(tiny_config):
    """A latent-space config (8x8x4 latents of 64x64 images, 16 tokens) and one batch."""
    c = tiny_config(
        STEP,
        **{
            "data.space": "latent",
            "data.image_size": 64,
            "encoder.image_size": 64,
            "encoder.arch.patch_size": 16,
            "model.input_size": 8,
            "model.in_channels": 4,
            "model.patch_size": 2,
        },
    )
    rng = np.random.default_rng(0)
    batch = {
        "image": rng.integers(0, 256, (BATCH, 64, 64, 3), dtype=np.uint8),
        "label": rng.integers(0, 10, BATCH).astype(np.int32),
        "latent_mean": rng.normal(size=(BATCH, 8, 8, 4)).astype(np.float32),
        "latent_std": np.full((BATCH, 8, 8, 4), 0.1, np.float32),
    }
    return c, batch


def test_a_nan_in_the_batch_is_not_applied_and_is_named(tiny_config):
    from sara_jax.training.loop import check_finite

    config, batch = latent_setup(tiny_config)
    batch["latent_mean"][3, 1, 2, 0] = np.nan
    mesh = data_mesh(jax.devices()[:2])
    module = DinoV2(patch_size=16, embed_dim=16, depth=1, num_heads=2, pos_grid=4)
    enc_params = module.init(jax.random.key(7), jnp.zeros((1, 64, 64, 3)))["params"]

    def features(params, images):
        return module.apply({"params": params}, imagenet_normalize(images))["x_norm_patchtokens"]

    models = build_models(config, 16)
    state = create_train_state(config, models, 16, jax.random.key(0))
    state = jax.device_put(state, NamedSharding(mesh, P()))
    before = jax.device_get(state)
    step = make_train_step(config, models, features, mesh)
    batch = jax.device_put(batch, NamedSharding(mesh, P("data")))
    state, metrics = step(state, batch, jax.device_put(enc_params, NamedSharding(mesh, P())))
    metrics = jax.device_get(metrics)
    assert metrics["nonfinite"] == 1.0
    after = jax.device_get(state)
    assert int(after.step) == 1
    assert_trees_close(after.replace(step=before.step), before, rtol=0, atol=0)
    with pytest.raises(FloatingPointError, match=r"step 0: non-finite .*velocity"):
        check_finite(metrics, 0, "stop")
    check_finite(metrics, 0, "skip")  # warns and goes on
