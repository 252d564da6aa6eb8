"""Parity of sara_jax.models.clip_vit + sara_jax.convert.clip with transformers' torch
CLIPVisionModel, on small random-weight models saved with `save_pretrained`."""

import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sara_jax.converters import clip
from sara_jax.converters.checkpoint import load_state_dict
from sara_jax.models.clip_vit import ClipVisionTransformer

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

PATCH, DIM, DEPTH, HEADS, MLP = 14, 64, 2, 4, 256


def vision_config(image_size: int) -> "transformers.CLIPVisionConfig":
    return transformers.CLIPVisionConfig(
        hidden_size=DIM,
        intermediate_size=MLP,
        num_hidden_layers=DEPTH,
        num_attention_heads=HEADS,
        image_size=image_size,
        patch_size=PATCH,
    )


def randomise(module: "torch.nn.Module", seed: int) -> None:
    """Adds N(0, 0.1^2) to every parameter in place.

    HF's init leaves LayerNorm scales at one and every bias at zero, where a swapped or missing
    tensor would go unnoticed; 0.1 also makes the attention logits O(1), so the softmax scale
    matters.
    """
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=gen))


def tower(model):
    """The vision transformer inside a CLIPVisionModel (transformers 5 makes it the model itself;
    4.x wraps it as `.vision_model`) or CLIPModel."""
    return getattr(model, "vision_model", model)


def make(image_size: int, dtype: jnp.dtype = jnp.float32) -> ClipVisionTransformer:
    return ClipVisionTransformer(
        patch_size=PATCH,
        embed_dim=DIM,
        depth=DEPTH,
        num_heads=HEADS,
        pos_grid=image_size // PATCH,
        mlp_ratio=MLP / DIM,
        dtype=dtype,
    )


def expected_params(image_size: int):
    model = make(image_size)
    x = jnp.zeros((1, image_size, image_size, 3))
    return jax.eval_shape(model.init, jax.random.key(0), x)["params"]


@functools.cache
def torch_model(image_size: int, scale_embeddings: float = 1.0):
    """A random CLIPVisionModel (eval, float32); `scale_embeddings` shrinks the patch conv,
    class and position embeddings, so ln_pre's input variance approaches its eps."""
    torch.manual_seed(image_size)
    model = transformers.CLIPVisionModel(vision_config(image_size)).eval().float()
    randomise(model, seed=image_size)
    if scale_embeddings != 1.0:
        with torch.no_grad():
            for p in tower(model).embeddings.parameters():
                p.mul_(scale_embeddings)
    return model


def saved_state_dict(model, tmp_path) -> dict[str, np.ndarray]:
    model.save_pretrained(tmp_path)
    return load_state_dict(str(tmp_path), "encoder.checkpoint")


def images(image_size: int, batch: int = 3) -> np.ndarray:
    return np.random.default_rng(1).standard_normal((batch, image_size, image_size, 3), np.float32)


def torch_tokens(vision_model, x: np.ndarray) -> np.ndarray:
    """last_hidden_state of HF's CLIP vision tower (CLS, then patches), for (B, H, W, 3) x."""
    with torch.no_grad():
        pixels = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()
        return vision_model(pixel_values=pixels).last_hidden_state.numpy()


def max_diffs(ours: np.ndarray, reference: np.ndarray) -> tuple[float, float]:
    """(max abs diff, max abs diff / max abs reference)."""
    diff = float(np.abs(np.asarray(ours, np.float64) - reference).max())
    return diff, diff / float(np.abs(reference).max())


@pytest.mark.parametrize("image_size", [56, 42])
def test_matches_transformers(image_size, tmp_path):
    model = torch_model(image_size)
    params = clip.from_hf(saved_state_dict(model, tmp_path), "tiny", expected_params(image_size))
    x = images(image_size)
    out = make(image_size).apply({"params": params}, jnp.asarray(x))
    reference = torch_tokens(model, x)
    grid = image_size // PATCH
    assert out["patch_tokens"].shape == (3, grid * grid, DIM)
    assert out["cls_token"].shape == (3, DIM)
    assert all(v.dtype == jnp.float32 for v in out.values())
    abs_diff, rel_diff = max_diffs(out["patch_tokens"], reference[:, 1:])
    print(f"image_size={image_size}: patch tokens max abs diff {abs_diff:.3g}, rel {rel_diff:.3g}")
    assert rel_diff <= 1e-4
    _, cls_rel = max_diffs(out["cls_token"], reference[:, 0])
    assert cls_rel <= 1e-4
    # The output is the pre-ln_post stream: post_layernorm would change it beyond tolerance.
    post = tower(model).post_layernorm
    with torch.no_grad():
        normed = post(torch.from_numpy(reference[:, 1:])).numpy()
    assert max_diffs(out["patch_tokens"], normed)[1] > 1e-2


def test_layer_norm_epsilon_is_clips(tmp_path):
    # Embeddings shrunk by 1e-3 give ln_pre an input variance near eps = 1e-5, where DINOv2's
    # 1e-6 would change the output visibly.
    model = torch_model(28, scale_embeddings=1e-3)
    params = clip.from_hf(saved_state_dict(model, tmp_path), "tiny", expected_params(28))
    x = images(28)
    out = make(28).apply({"params": params}, jnp.asarray(x))
    abs_diff, rel_diff = max_diffs(out["patch_tokens"], torch_tokens(model, x)[:, 1:])
    print(f"small embeddings: patch tokens max abs diff {abs_diff:.3g}, rel {rel_diff:.3g}")
    assert rel_diff <= 1e-4


def test_full_clip_model_checkpoint(tmp_path):
    """A CLIPModel checkpoint (`vision_model.` prefix, text tower, projections, logit_scale)
    converts to the same params as the bare vision tower, and matches its vision output."""
    vision = torch_model(56)
    config = transformers.CLIPConfig(
        text_config=dict(
            hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2
        ),
        vision_config=vision_config(56).to_dict(),
        projection_dim=16,
    )
    full = transformers.CLIPModel(config).eval().float()
    tower(full).load_state_dict(tower(vision).state_dict())
    state = saved_state_dict(full, tmp_path / "full")
    assert "text_projection.weight" in state and "logit_scale" in state
    # Older checkpoints (openai/clip-vit-large-patch14's pytorch_model.bin) store these buffers.
    state["vision_model.embeddings.position_ids"] = np.arange(17)[None]
    state["text_model.embeddings.position_ids"] = np.arange(77)[None]

    params = clip.from_hf(state, "full", expected_params(56))
    bare = clip.from_hf(saved_state_dict(vision, tmp_path / "bare"), "bare", expected_params(56))
    jax.tree.map(np.testing.assert_array_equal, params, bare)
    x = images(56)
    out = make(56).apply({"params": params}, jnp.asarray(x))
    reference = torch_tokens(tower(full), x)
    assert max_diffs(out["patch_tokens"], reference[:, 1:])[1] <= 1e-4


@functools.cache
def bare_state() -> dict[str, np.ndarray]:
    """The on-disk naming of `torch_model(28)`, without a file."""
    return {k: v.numpy() for k, v in torch_model(28).state_dict().items()}


def test_missing_key_is_named():
    state = dict(bare_state())
    del state["encoder.layers.1.mlp.fc2.bias"]
    with pytest.raises(KeyError, match=r"'encoder\.layers\.1\.mlp\.fc2\.bias'"):
        clip.from_hf(state, "tiny", expected_params(28))
    prefixed = {f"vision_model.{k}": v for k, v in state.items()}
    with pytest.raises(KeyError, match=r"'vision_model\.encoder\.layers\.1\.mlp\.fc2\.bias'"):
        clip.from_hf(prefixed, "tiny", expected_params(28))


@pytest.mark.parametrize(
    "prefix, key",
    [
        ("", "encoder.layers.0.self_attn.extra.weight"),
        ("", "encoder.layers.2.mlp.fc1.weight"),  # a deeper checkpoint than the model
        ("", "vision_projection.weight"),  # not one of the ignored text-tower names
        # Among prefixed keys, a bare vision key is reported, not merged or ignored.
        ("vision_model.", "encoder.layers.0.mlp.fc1.weight"),
        ("vision_model.", "post_layernorm.weight"),
        ("vision_model.", "vision_model.text_projection.weight"),
    ],
)
def test_unexpected_key_is_named(prefix, key):
    state = {f"{prefix}{k}": v for k, v in bare_state().items()}
    assert key not in state
    state[key] = np.zeros(3, np.float32)
    with pytest.raises(KeyError, match=rf"unexpected keys '{re.escape(key)}'"):
        clip.from_hf(state, "tiny", expected_params(28))


def test_ignores_known_extras():
    # bare_state() already holds post_layernorm.*, which the conversions above ignore.
    assert "post_layernorm.weight" in bare_state()
    extras = {
        "visual_projection.weight": np.zeros((16, DIM), np.float32),
        "text_projection.weight": np.zeros((16, 32), np.float32),
        "text_model.final_layer_norm.weight": np.ones(32, np.float32),
        "logit_scale": np.zeros((), np.float32),
        "embeddings.position_ids": np.arange(5)[None],
    }
    clip.from_hf({**bare_state(), **extras}, "tiny", expected_params(28))


def test_position_table_of_another_grid_is_rejected():
    with pytest.raises(ValueError, match=r"4 patches \(2 per side\).*pos_grid=3"):
        clip.from_hf(dict(bare_state()), "tiny", expected_params(42))


def test_bad_input_sizes_raise():
    with pytest.raises(ValueError, match=r"3x3 patch grid.*pos_grid=2x2"):
        make(28).init(jax.random.key(0), jnp.zeros((1, 42, 42, 3)))
    with pytest.raises(ValueError, match="patch_size=14"):
        make(28).init(jax.random.key(0), jnp.zeros((1, 29, 29, 3)))


def test_init_has_no_ln_post_and_no_conv_bias():
    params = jax.jit(make(28).init)(jax.random.key(0), jnp.zeros((1, 28, 28, 3)))["params"]
    assert set(params) == {
        "patch_embedding",
        "class_embedding",
        "position_embedding",
        "pre_layernorm",
        "layers_0",
        "layers_1",
    }
    assert set(params["patch_embedding"]) == {"kernel"}
    assert params["position_embedding"].shape == (5, DIM)
    # CLIP's init: zero biases, class embedding N(0, 1/D).
    np.testing.assert_array_equal(params["layers_0"]["mlp"]["fc1"]["bias"], 0)
    assert 0.08 < np.std(params["class_embedding"]) < 0.18


def test_bfloat16_compute_is_close(tmp_path):
    model = torch_model(56)
    expected = expected_params(56)
    params = clip.from_hf(saved_state_dict(model, tmp_path), "tiny", expected)
    shapes = jax.eval_shape(
        make(56, jnp.bfloat16).init, jax.random.key(0), jnp.zeros((1, 56, 56, 3))
    )
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(shapes))
    x = images(56)
    out = make(56, jnp.bfloat16).apply({"params": params}, jnp.asarray(x))
    assert all(v.dtype == jnp.float32 for v in out.values())
    abs_diff, rel_diff = max_diffs(out["patch_tokens"], torch_tokens(model, x)[:, 1:])
    print(f"bfloat16: patch tokens max abs diff {abs_diff:.3g}, rel {rel_diff:.3g}")
    assert rel_diff <= 3e-2
