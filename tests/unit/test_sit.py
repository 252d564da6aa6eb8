import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sara_jax.models.sit import (
    PRESETS,
    SiT,
    SiTBlock,
    TimestepEmbedder,
    sincos_pos_embed_2d,
    timestep_frequencies,
)


def tiny_sit(**overrides) -> SiT:
    kwargs = dict(
        input_size=8,
        in_channels=4,
        patch_size=2,
        hidden_size=32,
        depth=4,
        num_heads=4,
        num_classes=10,
        encoder_depth=2,
    )
    kwargs.update(overrides)
    return SiT(**kwargs)


def inputs(batch=3, size=8, channels=4):
    kx, kt = jax.random.split(jax.random.key(0))
    x = jax.random.normal(kx, (batch, size, size, channels))
    t = jax.random.uniform(kt, (batch,))
    y = jnp.arange(batch) % 11  # includes the null label 10 when batch > 10
    return x, t, y


def randomize(params, seed=1):
    """Replaces every parameter with noise, so zero-initialised gates stop hiding the blocks."""
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    new = [0.1 * jax.random.normal(k, leaf.shape) for k, leaf in zip(keys, leaves, strict=True)]
    return jax.tree.unflatten(treedef, new)


def test_velocity_is_exactly_zero_at_init_and_hidden_is_returned():
    model = tiny_sit()
    x, t, y = inputs()
    params = model.init(jax.random.key(0), x, t, y)
    velocity, hidden = model.apply(params, x, t, y)
    assert velocity.shape == x.shape and velocity.dtype == jnp.float32
    assert np.all(np.asarray(velocity) == 0.0)
    assert hidden.shape == (3, 16, 32) and hidden.dtype == jnp.float32
    # adaLN-Zero: every modulation and the output layer start at exactly zero.
    flat = jax.tree_util.tree_flatten_with_path(params["params"])[0]
    zero_init = [v for path, v in flat if "adaLN_modulation" in jax.tree_util.keystr(path)]
    assert len(zero_init) == 2 * (model.depth + 1)
    assert all(np.all(np.asarray(v) == 0) for v in zero_init)


@pytest.mark.parametrize("encoder_depth", [1, 2, 4])
def test_hidden_is_output_of_block_encoder_depth(encoder_depth):
    model = tiny_sit(encoder_depth=encoder_depth)
    x, t, y = inputs()
    params = randomize(model.init(jax.random.key(0), x, t, y))["params"]
    _, hidden = model.apply({"params": params}, x, t, y)

    # Manual forward through the same parameters, block by block.
    p = params
    patches = x.reshape(3, 4, 2, 4, 2, 4).transpose(0, 1, 3, 2, 4, 5).reshape(3, 16, 16)
    kernel = p["x_embedder"]["kernel"].reshape(16, 32)
    h = patches @ kernel + p["x_embedder"]["bias"] + sincos_pos_embed_2d(32, 4)[None]
    t_emb = TimestepEmbedder(32).apply({"params": p["t_embedder"]}, t)
    c = t_emb + p["y_embedder"]["embedding"][y]
    block = SiTBlock(32, 4, 4.0)
    for i in range(encoder_depth):
        h = block.apply({"params": p[f"blocks_{i}"]}, h, c)
    np.testing.assert_allclose(hidden, h, rtol=1e-5, atol=1e-5)


def test_velocity_depends_on_every_input_once_trained_away_from_zero():
    model = tiny_sit()
    x, t, y = inputs()
    params = randomize(model.init(jax.random.key(0), x, t, y))
    v, _ = model.apply(params, x, t, y)
    assert not np.allclose(v, model.apply(params, x, t, (y + 1) % 11)[0])
    assert not np.allclose(v, model.apply(params, x, 1 - t, y)[0])
    # Patches are put back where they came from: a change in one input patch moves the output
    # of that patch most.
    x2 = x.at[:, :2, :2].add(1.0)
    dv = np.abs(np.asarray(model.apply(params, x2, t, y)[0] - v)).sum(axis=(0, 3))
    assert dv[:2, :2].mean() > dv[4:, 4:].mean()


def test_sincos_pos_embed_matches_mae_convention():
    dim, grid = 16, 3
    emb = sincos_pos_embed_2d(dim, grid)
    omega = 1.0 / 10000 ** (np.arange(dim // 4) / (dim // 4))
    for r in range(grid):
        for col in range(grid):
            w, h = col * omega, r * omega  # first half encodes the column (MAE's w-first grid)
            expected = np.concatenate([np.sin(w), np.cos(w), np.sin(h), np.cos(h)])
            np.testing.assert_allclose(emb[r * grid + col], expected, rtol=1e-6, atol=1e-7)


def test_timestep_frequencies_cos_then_sin_without_rescaling():
    t = jnp.array([0.0, 0.5])
    f = np.asarray(timestep_frequencies(t, 8))
    freqs = np.exp(-np.log(10000) * np.arange(4) / 4)
    np.testing.assert_allclose(
        f[1], np.concatenate([np.cos(0.5 * freqs), np.sin(0.5 * freqs)]), rtol=1e-6
    )
    np.testing.assert_allclose(f[0], [1, 1, 1, 1, 0, 0, 0, 0])


# Published SiT/DiT parameter counts (DiT paper, Table 1).
@pytest.mark.parametrize("size,expected", [("S", 33e6), ("B", 130e6), ("L", 458e6), ("XL", 675e6)])
def test_published_parameter_counts(size, expected):
    depth, hidden, heads = PRESETS[size]
    model = SiT(
        input_size=32,
        in_channels=4,
        patch_size=2,
        hidden_size=hidden,
        depth=depth,
        num_heads=heads,
        num_classes=1000,
        encoder_depth=4,
    )
    x = jax.ShapeDtypeStruct((1, 32, 32, 4), jnp.float32)
    t = jax.ShapeDtypeStruct((1,), jnp.float32)
    y = jax.ShapeDtypeStruct((1,), jnp.int32)
    shapes = jax.eval_shape(model.init, jax.random.key(0), x, t, y)
    count = sum(int(np.prod(s.shape)) for s in jax.tree.leaves(shapes))
    assert abs(count - expected) / expected < 0.005, count


@pytest.mark.parametrize("patch_size", [2, 4, 8])
def test_patch_sizes(patch_size):
    model = tiny_sit(input_size=16, patch_size=patch_size, depth=2, encoder_depth=1)
    x, t, y = inputs(size=16)
    params = model.init(jax.random.key(0), x, t, y)
    v, h = model.apply(params, x, t, y)
    assert v.shape == x.shape
    assert h.shape == (3, (16 // patch_size) ** 2, 32)


def test_bfloat16_compute_keeps_float32_params_and_outputs():
    model = tiny_sit(dtype=jnp.bfloat16)
    x, t, y = inputs()
    params = model.init(jax.random.key(0), x, t, y)
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(params))
    v, h = model.apply(randomize(params), x, t, y)
    assert v.dtype == jnp.float32 and h.dtype == jnp.float32
    v32, _ = tiny_sit().apply(randomize(params), x, t, y)
    np.testing.assert_allclose(v, v32, rtol=0.1, atol=0.1)


def test_bad_input_shape_and_encoder_depth_raise():
    x, t, y = inputs()
    with pytest.raises(ValueError, match="expects inputs of shape"):
        tiny_sit().init(jax.random.key(0), x[:, :4], t, y)
    with pytest.raises(ValueError, match="encoder_depth"):
        tiny_sit(encoder_depth=5).init(jax.random.key(0), x, t, y)
