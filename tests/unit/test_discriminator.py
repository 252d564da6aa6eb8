"""Tests for sara_jax.models.discriminator: layout, torch-style padding, BatchNorm, shard_map."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from sara_jax.models.discriminator import Discriminator

Z_DIM = 8


def init(model: Discriminator, side: int, batch: int = 2):
    tokens = jax.random.normal(jax.random.key(1), (batch, side * side, Z_DIM))
    return model.init(jax.random.key(0), tokens, train=False), tokens


def intermediates(model, variables, tokens, train=False):
    """Outputs of every submodule, keyed by path, from one eval-mode forward."""
    logits, state = model.apply(
        variables, tokens, train=train, capture_intermediates=True, mutable=["intermediates"]
    )
    return logits, state["intermediates"]


def test_output_shape_and_dtype():
    model = Discriminator()
    variables, tokens = init(model, side=4, batch=3)
    logits = model.apply(variables, tokens, train=False)
    assert logits.shape == (3,)
    assert logits.dtype == jnp.float32
    assert set(variables) == {"params", "batch_stats"}


def test_non_square_token_count_raises():
    model = Discriminator()
    with pytest.raises(ValueError, match="N=15"):
        model.init(jax.random.key(0), jnp.zeros((2, 15, Z_DIM)), train=False)


def test_param_names_follow_torchvision():
    variables, _ = init(Discriminator(), side=4)
    params = variables["params"]
    assert set(params) == {
        "conv1", "bn1", "layer1_0", "layer1_1", "layer2_0", "layer2_1", "fc"
    }  # fmt: skip
    assert set(params["layer1_0"]) == {"conv1", "bn1", "conv2", "bn2"}
    assert set(params["layer2_0"]) == {
        "conv1", "bn1", "conv2", "bn2", "downsample_conv", "downsample_bn"
    }  # fmt: skip
    assert set(params["conv1"]) == {"kernel"}  # no conv biases, as torchvision
    assert set(variables["batch_stats"]["layer2_0"]["downsample_bn"]) == {"mean", "var"}


def test_trunk_param_count_matches_resnet18_layers():
    params = init(Discriminator(), side=4)[0]["params"]

    def count(tree):
        return sum(x.size for x in jax.tree.leaves(tree))

    def bn(c):
        return 2 * c  # scale and bias

    block64 = 2 * (3 * 3 * 64 * 64 + bn(64))
    block128_down = 3 * 3 * 64 * 128 + bn(128) + 3 * 3 * 128 * 128 + bn(128) + 64 * 128 + bn(128)
    block128 = 2 * (3 * 3 * 128 * 128 + bn(128))
    # torchvision's resnet18: layer1 has 147,968 parameters, layer2 525,568.
    assert 2 * block64 == 147_968
    assert block128_down + block128 == 525_568
    assert count(params["conv1"]) + count(params["bn1"]) == Z_DIM * 64 + bn(64)
    assert count([params["layer1_0"], params["layer1_1"]]) == 147_968
    assert count([params["layer2_0"], params["layer2_1"]]) == 525_568
    assert count(params["fc"]) == 128 + 1


def test_tokens_are_laid_out_row_major():
    model = Discriminator()
    side = 4
    variables, tokens = init(model, side)
    logits, inter = intermediates(model, variables, tokens)
    stem = inter["conv1"]["__call__"][0]  # (B, side, side, 64)
    kernel = variables["params"]["conv1"]["kernel"][0, 0]  # (Z_DIM, 64)
    for r, c in [(0, 1), (1, 0), (2, 3), (3, 2)]:
        np.testing.assert_allclose(stem[:, r, c], tokens[:, r * side + c] @ kernel, rtol=1e-5)
    # A 3x3-conv trunk is not invariant to transposing the grid, so the mapping matters.
    transposed = tokens.reshape(2, side, side, Z_DIM).transpose(0, 2, 1, 3).reshape(tokens.shape)
    assert not np.allclose(model.apply(variables, transposed, train=False), logits, atol=1e-4)


def test_stride2_conv_pads_like_torch():
    model = Discriminator()
    variables, tokens = init(model, side=8)
    _, inter = intermediates(model, variables, tokens)
    layer1_out = inter["layer1_1"]["__call__"][0]  # (B, 8, 8, 64)
    conv_out = inter["layer2_0"]["conv1"]["__call__"][0]  # (B, 4, 4, 128)
    kernel = variables["params"]["layer2_0"]["conv1"]["kernel"]

    def conv(padding):
        return jax.lax.conv_general_dilated(
            layer1_out, kernel, (2, 2), padding, dimension_numbers=("NHWC", "HWIO", "NHWC")
        )

    np.testing.assert_allclose(conv_out, conv(((1, 1), (1, 1))), rtol=1e-5, atol=1e-5)
    # On an even input 'SAME' pads (0, 1) and samples a shifted grid: the check can tell.
    assert not np.allclose(conv_out, conv("SAME"), atol=1e-3)


@pytest.mark.parametrize(("use_maxpool", "layer1_side"), [(False, 8), (True, 4)])
def test_maxpool_is_optional(use_maxpool, layer1_side):
    model = Discriminator(use_maxpool=use_maxpool)
    variables, tokens = init(model, side=8)
    _, inter = intermediates(model, variables, tokens)
    assert inter["layer1_1"]["__call__"][0].shape == (2, layer1_side, layer1_side, 64)
    assert inter["layer2_1"]["__call__"][0].shape == (2, layer1_side // 2, layer1_side // 2, 128)


def test_train_mode_uses_batch_stats_and_updates_running_averages():
    model = Discriminator()
    variables, tokens = init(model, side=4, batch=4)
    # Non-trivial running statistics so that "0.9 * old" is actually exercised.
    old_mean = jnp.linspace(-1.0, 1.0, 64)
    old_var = jnp.linspace(0.5, 2.0, 64)
    stats = dict(variables["batch_stats"], bn1={"mean": old_mean, "var": old_var})
    variables = {"params": variables["params"], "batch_stats": stats}

    eval_logits = model.apply(variables, tokens, train=False)
    train_logits, updated = model.apply(variables, tokens, train=True, mutable=["batch_stats"])
    assert not np.allclose(train_logits, eval_logits, atol=1e-4)

    kernel = np.asarray(variables["params"]["conv1"]["kernel"][0, 0], np.float64)
    stem = np.asarray(tokens, np.float64) @ kernel  # (B, N, 64): the 1x1 conv
    batch_mean = stem.mean(axis=(0, 1))
    batch_var = stem.var(axis=(0, 1))  # flax keeps the biased variance (torch: unbiased)
    new = updated["batch_stats"]["bn1"]
    np.testing.assert_allclose(new["mean"], 0.9 * old_mean + 0.1 * batch_mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(new["var"], 0.9 * old_var + 0.1 * batch_var, rtol=1e-5, atol=1e-6)
    # Eval mode leaves the running averages alone.
    _, unchanged = model.apply(variables, tokens, train=False, mutable=["batch_stats"])
    np.testing.assert_array_equal(unchanged["batch_stats"]["bn1"]["mean"], old_mean)


def test_train_mode_under_shard_map_matches_single_device():
    batch = 8
    # As many devices as the batch splits evenly over (8 under the test XLA_FLAGS).
    num_shards = max(n for n in range(1, len(jax.devices()) + 1) if batch % n == 0)
    mesh = jax.make_mesh((num_shards,), ("data",), devices=jax.devices()[:num_shards])

    single = Discriminator()
    variables, tokens = init(single, side=4, batch=batch)
    want_logits, want_state = single.apply(variables, tokens, train=True, mutable=["batch_stats"])

    sharded = Discriminator(axis_name="data")

    def step(variables, tokens):
        return sharded.apply(variables, tokens, train=True, mutable=["batch_stats"])

    in_specs = (P(), P("data"))
    args = jax.device_put((variables, tokens), tuple(NamedSharding(mesh, s) for s in in_specs))
    got_logits, got_state = jax.jit(
        jax.shard_map(step, mesh=mesh, in_specs=in_specs, out_specs=(P("data"), P()))
    )(*args)
    np.testing.assert_allclose(got_logits, want_logits, rtol=1e-4, atol=1e-5)
    jax.tree.map(
        lambda got, want: np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5),
        got_state,
        want_state,
    )


def test_bfloat16_compute_keeps_float32_params_and_logits():
    model = Discriminator(dtype=jnp.bfloat16)
    variables, tokens = init(model, side=4)
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(variables))
    logits = model.apply(variables, tokens, train=False)
    assert logits.dtype == jnp.float32
    reference = Discriminator().apply(variables, tokens, train=False)
    np.testing.assert_allclose(logits, reference, rtol=0.05, atol=0.05)
