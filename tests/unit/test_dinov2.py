"""Tests for sara_jax.models.dinov2: shapes, an independent forward pass, init, errors."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.scipy.special import erf

from sara_jax.models.dinov2 import DinoV2

PATCH, DIM, HEADS, GRID = 4, 32, 4, 3


def make(num_register_tokens: int = 0, **kwargs) -> DinoV2:
    return DinoV2(
        patch_size=PATCH,
        embed_dim=DIM,
        depth=2,
        num_heads=HEADS,
        pos_grid=GRID,
        num_register_tokens=num_register_tokens,
        **kwargs,
    )


def images(batch: int = 2, side: int = GRID * PATCH) -> jax.Array:
    return jax.random.normal(jax.random.key(1), (batch, side, side, 3))


@functools.cache
def random_params(num_register_tokens: int = 0):
    """A param tree of `make(num_register_tokens)` filled with N(0, 0.3^2) values.

    Random everywhere rather than at init: layer-scale gammas of 1e-5 would hide the blocks.
    numpy fills it, which is much cheaper than compiling the model's init.
    """
    shapes = jax.eval_shape(make(num_register_tokens).init, jax.random.key(0), images())
    rng = np.random.default_rng(0)
    return jax.tree.map(
        lambda x: jnp.asarray(0.3 * rng.standard_normal(x.shape), jnp.float32), shapes["params"]
    )


@functools.cache
def initial_params():
    """Params of a model with registers and a non-default layer scale, from its own init."""
    model = make(num_register_tokens=4, layerscale_init=0.25)
    return jax.jit(model.init)(jax.random.key(0), images())["params"]


def reference_forward(params, x, num_heads: int, patch: int, num_registers: int):
    """DINOv2's forward_features in plain jnp, from the param tree alone."""

    def norm(p, h):
        mean = h.mean(-1, keepdims=True)
        var = ((h - mean) ** 2).mean(-1, keepdims=True)
        return (h - mean) / jnp.sqrt(var + 1e-6) * p["scale"] + p["bias"]

    def linear(p, h):
        return h @ p["kernel"] + p["bias"]

    b, height, width, c = x.shape
    gh, gw = height // patch, width // patch
    patches = x.reshape(b, gh, patch, gw, patch, c).transpose(0, 1, 3, 2, 4, 5)
    patches = patches.reshape(b, gh * gw, patch * patch * c)
    kernel = params["patch_embed"]["kernel"].reshape(patch * patch * c, -1)
    h = patches @ kernel + params["patch_embed"]["bias"]
    d = h.shape[-1]
    h = jnp.concatenate([jnp.tile(params["cls_token"], (b, 1, 1)), h], 1) + params["pos_embed"]
    if num_registers:
        regs = jnp.tile(params["register_tokens"], (b, 1, 1))
        h = jnp.concatenate([h[:, :1], regs, h[:, 1:]], 1)
    t = h.shape[1]
    head_dim = d // num_heads
    i = 0
    while f"blocks_{i}" in params:
        p = params[f"blocks_{i}"]
        qkv = linear(p["attn"]["qkv"], norm(p["norm1"], h)).reshape(b, t, 3, num_heads, head_dim)
        q, k, v = (qkv[:, :, j].transpose(0, 2, 1, 3) for j in range(3))  # (B, heads, T, hd)
        weights = jax.nn.softmax(q @ k.transpose(0, 1, 3, 2) * head_dim**-0.5, axis=-1)
        attn = (weights @ v).transpose(0, 2, 1, 3).reshape(b, t, d)
        h = h + p["ls1"]["gamma"] * linear(p["attn"]["proj"], attn)
        hidden = linear(p["mlp"]["fc1"], norm(p["norm2"], h))
        hidden = 0.5 * hidden * (1 + erf(hidden / np.sqrt(2)))
        h = h + p["ls2"]["gamma"] * linear(p["mlp"]["fc2"], hidden)
        i += 1
    h = norm(params["norm"], h)
    return h[:, 0], h[:, 1 : 1 + num_registers], h[:, 1 + num_registers :]


@pytest.mark.parametrize("num_registers", [0, 4])
def test_output_shapes(num_registers):
    model = make(num_registers)
    x = images(batch=3)
    params = random_params(num_registers)
    out = model.apply({"params": params}, x)
    assert out["x_norm_clstoken"].shape == (3, DIM)
    assert out["x_norm_regtokens"].shape == (3, num_registers, DIM)
    assert out["x_norm_patchtokens"].shape == (3, GRID * GRID, DIM)
    assert all(v.dtype == jnp.float32 for v in out.values())
    assert ("register_tokens" in params) == bool(num_registers)


@pytest.mark.parametrize("num_registers", [0, 4])
def test_matches_independent_forward(num_registers):
    model = make(num_registers)
    x = images()
    params = random_params(num_registers)
    out = model.apply({"params": params}, x)
    cls, regs, patches = reference_forward(params, x, HEADS, PATCH, num_registers)
    np.testing.assert_allclose(out["x_norm_clstoken"], cls, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(out["x_norm_regtokens"], regs, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(out["x_norm_patchtokens"], patches, rtol=1e-4, atol=1e-4)


def test_layer_norm_epsilon_is_dinov2s():
    # Shrink the embeddings so the first LayerNorm sees a variance near eps = 1e-6, where an
    # eps of 1e-5 (torch's default) would change the output visibly.
    params = dict(random_params())
    params["patch_embed"] = jax.tree.map(lambda p: 1e-3 * p, params["patch_embed"])
    params["cls_token"], params["pos_embed"] = (
        1e-3 * params["cls_token"],
        1e-3 * params["pos_embed"],
    )
    out = make().apply({"params": params}, images())
    _, _, patches = reference_forward(params, images(), HEADS, PATCH, num_registers=0)
    np.testing.assert_allclose(out["x_norm_patchtokens"], patches, rtol=1e-3, atol=1e-3)


def test_bad_input_sizes_raise():
    # The check comes before any parameter is created, so init already raises.
    with pytest.raises(ValueError, match=r"4x4 patch grid.*pos_grid=3x3"):
        make().init(jax.random.key(0), images(side=4 * PATCH))
    with pytest.raises(ValueError, match="patch_size=4"):
        make().init(jax.random.key(0), images(side=GRID * PATCH + 1))


def test_layerscale_gamma_starts_at_layerscale_init():
    params = initial_params()
    for ls in ("ls1", "ls2"):
        np.testing.assert_array_equal(params["blocks_1"][ls]["gamma"], np.full(DIM, 0.25))
    assert DinoV2.layerscale_init == 1e-5  # DINOv2's released models


def test_init_follows_dinov2():
    params = initial_params()
    block = params["blocks_0"]
    for tokens in ("cls_token", "register_tokens"):
        assert 0 < np.abs(params[tokens]).max() < 1e-5
    assert 0.01 < np.std(params["pos_embed"]) < 0.03
    fc1 = block["mlp"]["fc1"]
    assert 0.017 < np.std(fc1["kernel"]) < 0.023
    np.testing.assert_array_equal(fc1["bias"], 0)
    # torch's Conv2d default on the patch conv: U(+-1/sqrt(fan_in)), fan_in = 4*4*3.
    bound = 1 / np.sqrt(PATCH * PATCH * 3)
    for leaf in params["patch_embed"].values():
        assert np.abs(leaf).max() <= bound
        assert np.abs(leaf).max() > 0.8 * bound


def test_bfloat16_compute_keeps_float32_params_and_outputs():
    x = images()
    shapes = jax.eval_shape(make(dtype=jnp.bfloat16).init, jax.random.key(0), x)
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(shapes))
    params = random_params()
    low = make(dtype=jnp.bfloat16).apply({"params": params}, x)
    full = make().apply({"params": params}, x)
    for key, value in low.items():
        assert value.dtype == jnp.float32
        np.testing.assert_allclose(value, full[key], atol=0.1)
