"""iREPA's two changes to REPA as config options: the conv projector (models/projector.py), the
spatial z-score of the encoder tokens (objective/losses.py) and where the objective and the
train step use them (objective/sara.py, training/step.py); the methods that name them."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import STEP, random_encoder
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from sara_jax.config import METHODS, set_alignment, validate
from sara_jax.data.shapes import ShapesSource
from sara_jax.models.projector import ConvProjector, Projector, make_projector
from sara_jax.objective import losses, sara
from sara_jax.objective.family import make_objective
from sara_jax.training import step as step_module
from sara_jax.training.sharding import data_mesh
from sara_jax.training.state import build_models, create_train_state

IREPA = {"projector.kind": "conv", "loss.encoder_norm": "zscore"}


def random_tokens(shape, seed=0, loc=0.0):
    return jnp.asarray(np.random.default_rng(seed).normal(loc, 2.0, size=shape), jnp.float32)


@pytest.mark.parametrize("kernel_size", [1, 3])
def test_conv_projector_maps_tokens_to_the_encoder_width(kernel_size):
    projector = ConvProjector(kernel_size=kernel_size, z_dim=5)
    h = random_tokens((2, 16, 8)).astype(jnp.bfloat16)
    params = projector.init(jax.random.key(0), h)["params"]
    assert params["conv"]["kernel"].shape == (kernel_size, kernel_size, 8, 5)
    assert params["conv"]["bias"].shape == (5,)
    out = projector.apply({"params": params}, h)
    assert out.shape == (2, 16, 5) and out.dtype == jnp.float32


def test_conv_projector_refuses_a_token_count_that_is_not_a_square():
    projector = ConvProjector(kernel_size=3, z_dim=5)
    with pytest.raises(ValueError, match="needs a square token grid, got N=12 tokens"):
        projector.init(jax.random.key(0), jnp.zeros((1, 12, 8)))


def test_a_kernel_1_conv_is_a_dense_layer_on_every_token():
    projector = ConvProjector(kernel_size=1, z_dim=5)
    h = random_tokens((2, 9, 8))
    params = projector.init(jax.random.key(1), h)["params"]
    params = {"conv": {**params["conv"], "bias": random_tokens((5,), seed=2)}}
    dense = h @ params["conv"]["kernel"][0, 0] + params["conv"]["bias"]
    out = projector.apply({"params": params}, h)
    np.testing.assert_allclose(out, dense, rtol=1e-5, atol=1e-5)


def test_a_kernel_3_conv_mixes_the_grid_neighbours_only():
    # A token's output moves with its 8 neighbours on the 4 x 4 grid and no other token.
    projector = ConvProjector(kernel_size=3, z_dim=3)
    h = random_tokens((1, 16, 4))
    params = projector.init(jax.random.key(0), h)["params"]
    jacobian = jax.jacobian(lambda x: projector.apply({"params": params}, x)[0, 5])(h)
    moved = np.abs(np.asarray(jacobian)).sum(axis=(0, 1, 3)) > 0  # per input token
    rows, cols = np.divmod(np.arange(16), 4)
    near = (np.abs(rows - 1) <= 1) & (np.abs(cols - 1) <= 1)  # token 5 is (1, 1)
    np.testing.assert_array_equal(moved, near)


def test_make_projector_follows_the_config(tiny_config):
    config = tiny_config()
    mlp = make_projector(config.projector, 16, jnp.float32)
    assert isinstance(mlp, Projector) and mlp.width == config.projector.width
    config.projector.kind, config.projector.kernel_size = "conv", 5
    conv = build_models(config, 16).projector
    assert isinstance(conv, ConvProjector) and (conv.kernel_size, conv.z_dim) == (5, 16)


def test_config_refuses_an_even_kernel_and_unknown_choices(tiny_config):
    for field, value, message in [
        ("projector.kernel_size", 2, "projector.kernel_size must be a positive odd number"),
        ("projector.kind", "linear", r"projector.kind must be one of \('mlp', 'conv'\)"),
        ("loss.encoder_norm", "layernorm", "loss.encoder_norm must be 'none' or 'zscore'"),
        ("loss.encoder_norm_terms", "struc", "loss.encoder_norm_terms must be 'all' or"),
        ("loss.zscore_alpha", -0.1, "loss.zscore_alpha must be >= 0"),
    ]:
        config = tiny_config()
        config.update_from_flattened_dict({field: value})
        with pytest.raises(ValueError, match=message):
            validate(config)


def test_zscore_centres_and_scales_each_channel_over_the_tokens():
    z = random_tokens((3, 10, 4), loc=5.0).astype(jnp.bfloat16)
    out = losses.spatial_zscore(z, alpha=1.0)
    assert out.shape == (3, 10, 4) and out.dtype == jnp.float32
    np.testing.assert_allclose(out.mean(axis=1), 0.0, atol=1e-5)
    # The unbiased std (N - 1) is 1, the biased one sqrt(9 / 10) (within eps 1e-6).
    np.testing.assert_allclose(np.std(out, axis=1, ddof=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(np.std(out, axis=1), np.sqrt(0.9), rtol=1e-5)


def test_zscore_alpha_sets_the_share_of_the_mean_removed():
    z = np.asarray(random_tokens((2, 9, 3), loc=4.0), np.float64)
    mean, std = z.mean(axis=1, keepdims=True), z.std(axis=1, ddof=1, keepdims=True)
    for alpha in (0.0, 0.6):
        out = losses.spatial_zscore(jnp.asarray(z, jnp.float32), alpha)
        # The mean left over is (1 - alpha) of it; alpha 0 keeps it, only rescaled.
        np.testing.assert_allclose(
            out.mean(axis=1, keepdims=True), (1 - alpha) * mean / (std + 1e-6), rtol=1e-5
        )
        np.testing.assert_allclose(out, (z - alpha * mean) / (std + 1e-6), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "norm, terms, patch_normalised, others_normalised",
    [
        ("none", "all", False, False),
        ("zscore", "all", True, True),
        ("zscore", "patch", True, False),
    ],
)
def test_alignment_targets_normalise_the_terms_chosen(
    norm, terms, patch_normalised, others_normalised, tiny_config
):
    loss = tiny_config(**{"loss.encoder_norm": norm, "loss.encoder_norm_terms": terms}).loss
    z = random_tokens((2, 16, 4), loc=3.0)
    normalised = losses.spatial_zscore(z, loss.zscore_alpha)
    for got, want in zip(
        sara.alignment_targets(z, loss), (patch_normalised, others_normalised), strict=True
    ):
        np.testing.assert_array_equal(got, normalised if want else z)


def step_inputs(config, models, params, seed=0):
    """One batch of the objective's inputs for the 4 x 4-token tiny SiT, z_enc 16 wide."""
    m, rng = config.model, np.random.default_rng(seed)
    x0 = jnp.asarray(rng.normal(size=(4, m.input_size, m.input_size, m.in_channels)), jnp.float32)
    eps = jnp.asarray(rng.normal(size=x0.shape), jnp.float32)
    t = jnp.asarray([0.1, 0.4, 0.6, 0.9], jnp.float32)
    inputs = make_objective(config).network_inputs(x0, eps, t)
    return {**inputs, "labels": jnp.arange(4) % 10, "z_enc": random_tokens((4, 16, 16), seed, 2.0)}


def conv_by_hand(h, kernel, bias):
    """A zero-padded k x k convolution on the 4 x 4 token grid, tap by tap in numpy."""
    h, kernel = np.asarray(h, np.float64), np.asarray(kernel, np.float64)
    k, batch = kernel.shape[0], h.shape[0]
    pad = k // 2
    grid = np.pad(h.reshape(batch, 4, 4, -1), ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    out = np.zeros((batch, 4, 4, kernel.shape[-1])) + np.asarray(bias, np.float64)
    for i in range(k):
        for j in range(k):
            out += grid[:, i : i + 4, j : j + 4] @ kernel[i, j]
    return out.reshape(batch, 16, -1)


def cosine_loss_by_hand(z, h):
    z = z / np.linalg.norm(z, axis=-1, keepdims=True)
    h = h / np.linalg.norm(h, axis=-1, keepdims=True)
    return -np.mean(np.sum(z * h, axis=-1))


@pytest.mark.parametrize("terms", ["all", "patch"])
def test_generator_loss_aligns_the_conv_projection_to_the_zscored_tokens(terms, tiny_config):
    config = tiny_config(STEP, IREPA, **{"loss.encoder_norm_terms": terms})
    set_alignment(config, "patch,struc")
    models = build_models(config, 16)
    state = create_train_state(config, models, 16, jax.random.key(0))
    inputs = step_inputs(config, models, state.params)
    _, (logged, h_den) = sara.generator_loss(
        state.params, state.disc, inputs, models, config, jnp.float32(0.0)
    )
    _, z_den = sara.denoiser_forward(state.params, inputs, models)
    conv = state.params["projector"]["conv"]
    h_hand = conv_by_hand(z_den, conv["kernel"], conv["bias"])
    np.testing.assert_allclose(h_den, h_hand, rtol=1e-4, atol=1e-5)
    z = np.asarray(inputs["z_enc"], np.float64)
    mean, std = z.mean(axis=1, keepdims=True), z.std(axis=1, ddof=1, keepdims=True)
    z_hand = (z - 0.6 * mean) / (std + 1e-6)
    np.testing.assert_allclose(logged["patch"], cosine_loss_by_hand(z_hand, h_hand), rtol=1e-5)
    # L_struc takes the normalised tokens with "all", the raw ones with "patch".
    z_struc = jnp.asarray(z_hand if terms == "all" else z, jnp.float32)
    want = losses.structural_loss(z_struc, jnp.asarray(h_hand, jnp.float32), "mean")
    np.testing.assert_allclose(logged["struc"], want, rtol=1e-4)


def test_with_every_alignment_weight_zero_neither_projector_nor_zscore_runs(
    tiny_config, monkeypatch
):
    config = tiny_config(STEP, IREPA)
    set_alignment(config, "none")
    models = build_models(config, 16)
    state = create_train_state(config, models, 16, jax.random.key(0))
    inputs = step_inputs(config, models, state.params)

    def refused(*args, **kwargs):
        raise AssertionError("the z-score ran with every alignment weight 0")

    monkeypatch.setattr(losses, "spatial_zscore", refused)
    nans = jax.tree.map(lambda x: jnp.full_like(x, jnp.nan), state.params["projector"])
    poisoned = {**state.params, "projector": nans}

    def loss(params):
        return sara.generator_loss(params, state.disc, inputs, models, config, jnp.float32(0.0))

    total, (logged, h_den) = loss(poisoned)
    assert h_den is None and set(logged) == {"velocity"}
    np.testing.assert_array_equal(total, loss(state.params)[0])
    grads = jax.grad(lambda p: loss(p)[0])(state.params)
    assert all(not np.any(g) for g in jax.tree.leaves(grads["projector"]))


@pytest.mark.parametrize("terms", ["all", "patch"])
def test_the_train_step_shows_d_the_tokens_the_other_terms_take(terms, tiny_config, monkeypatch):
    # sara_irepa, one step on one device: D's real tokens are z-scored with "all", raw with
    # "patch", and the conv projector trains.
    config = tiny_config(STEP)
    set_alignment(config, "sara_irepa")
    config.loss.encoder_norm_terms = terms
    validate(config)
    seen = []
    original = step_module.disc_objective

    def spy(d_params, batch_stats, real, fake, models, bn_train):
        jax.debug.callback(lambda r: seen.append(np.asarray(r)), real)
        return original(d_params, batch_stats, real, fake, models, bn_train)

    monkeypatch.setattr(step_module, "disc_objective", spy)
    mesh = data_mesh(jax.devices()[:1])
    features, enc_params = random_encoder()
    models = build_models(config, 16)
    state = create_train_state(config, models, 16, jax.random.key(0))
    source = ShapesSource(config.data.global_batch_size, image_size=16, num_classes=10, seed=3)
    records = [source[i] for i in range(config.data.global_batch_size)]
    batch = {k: np.stack([r[k] for r in records]) for k in records[0]}
    replicated = NamedSharding(mesh, P())
    train_step = step_module.make_train_step(config, models, features, mesh, disc_gate="mask")
    new_state, metrics = train_step(
        jax.device_put(state, replicated),
        jax.device_put(batch, NamedSharding(mesh, P("data"))),
        jax.device_put(enc_params, replicated),
    )
    jax.effects_barrier()
    assert all(np.isfinite(float(v)) for v in jax.device_get(metrics).values())
    assert {"patch", "struc", "adv", "disc_loss"} <= set(metrics)
    z_enc = features(enc_params, jnp.asarray(batch["image"]))
    want = losses.spatial_zscore(z_enc, 0.6) if terms == "all" else z_enc
    assert seen, "D's objective never ran"
    np.testing.assert_allclose(seen[0], want, rtol=1e-4, atol=1e-4)
    before, after = state.params["projector"]["conv"], new_state.params["projector"]["conv"]
    assert not np.array_equal(before["kernel"], jax.device_get(after["kernel"]))


def test_irepa_methods_set_both_changes_and_their_weights():
    assert METHODS["irepa"].terms == METHODS["repa"].terms == "patch"
    assert METHODS["sara_irepa"].terms == METHODS["sara"].terms == "patch,struc,adv"
    from sara_jax.config import base_config

    for name, weights in [("irepa", (1.0, 0.0, 0.0)), ("sara_irepa", (0.5, 0.5, 0.05))]:
        c = base_config()
        set_alignment(c, name)
        assert (c.loss.patch_weight, c.loss.struc_weight, c.loss.adv_weight) == weights
        assert (c.projector.kind, c.projector.kernel_size) == ("conv", 3)
        assert (c.loss.encoder_norm, c.loss.zscore_alpha, c.loss.encoder_norm_terms) == (
            "zscore",
            0.6,
            "all",
        )
        set_alignment(c, "sara")  # A REPA-projection method undoes both changes.
        assert (c.projector.kind, c.loss.encoder_norm) == ("mlp", "none")
