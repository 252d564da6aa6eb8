"""DinoV2 with converted weights against transformers' torch Dinov2Model (random init)."""

import functools

import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from sara_jax.converters import dinov2 as convert_dinov2  # noqa: E402
from sara_jax.converters.checkpoint import load_state_dict  # noqa: E402
from sara_jax.models.dinov2 import DinoV2  # noqa: E402

PATCH, DIM, DEPTH, HEADS = 14, 64, 2, 4


def hf_model(image_size: int, registers: int = 0, swiglu: bool = False):
    """A small random-init HF DINOv2 with non-trivial layer scales, in eval mode."""
    torch.manual_seed(image_size + registers + swiglu)
    kwargs = dict(
        hidden_size=DIM,
        num_hidden_layers=DEPTH,
        num_attention_heads=HEADS,
        image_size=image_size,
        patch_size=PATCH,
        use_swiglu_ffn=swiglu,
    )
    if registers:
        config = transformers.Dinov2WithRegistersConfig(num_register_tokens=registers, **kwargs)
        model = transformers.Dinov2WithRegistersModel(config)
    else:
        model = transformers.Dinov2Model(transformers.Dinov2Config(**kwargs))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lambda1" in name or "token" in name or "position" in name:
                p.normal_(0.0, 0.5)
    return model.eval()


def flax_model(grid: int, registers: int = 0, swiglu: bool = False) -> DinoV2:
    return DinoV2(
        patch_size=PATCH,
        embed_dim=DIM,
        depth=DEPTH,
        num_heads=HEADS,
        pos_grid=grid,
        num_register_tokens=registers,
        ffn="swiglu" if swiglu else "mlp",
    )


def expected_params(module: DinoV2):
    side = module.pos_grid * PATCH
    shapes = jax.eval_shape(module.init, jax.random.key(0), np.zeros((1, side, side, 3)))
    return shapes["params"]


@functools.cache
def saved_hf(tmp_dir: str, image_size: int, registers: int = 0, swiglu: bool = False) -> str:
    path = f"{tmp_dir}/hf_{image_size}_{registers}_{swiglu}"
    hf_model(image_size, registers, swiglu).save_pretrained(path)
    return path


def relative_error(got: np.ndarray, want: np.ndarray) -> tuple[float, float]:
    diff = float(np.abs(got - want).max())
    return diff, diff / float(np.abs(want).max())


@pytest.fixture(scope="module")
def tmp_dir(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("dinov2"))


@pytest.mark.parametrize(
    "image_size, registers, swiglu",
    [(224, 0, False), (224, 4, False), (98, 0, False), (98, 4, True)],
)
def test_patch_tokens_match_transformers(tmp_dir, image_size, registers, swiglu):
    path = saved_hf(tmp_dir, image_size, registers, swiglu)
    module = flax_model(image_size // PATCH, registers, swiglu)
    params = convert_dinov2.convert(load_state_dict(path, "test"), path, expected_params(module))
    images = np.random.default_rng(0).normal(size=(2, image_size, image_size, 3))
    images = images.astype(np.float32)
    with torch.no_grad():
        pixels = torch.from_numpy(images).permute(0, 3, 1, 2)
        want = hf_model(image_size, registers, swiglu)(pixels).last_hidden_state.numpy()
    got = jax.jit(module.apply)({"params": params}, images)
    abs_err, rel_err = relative_error(
        np.asarray(got["x_norm_patchtokens"]), want[:, 1 + registers :]
    )
    print(
        f"DINOv2 {image_size}px reg={registers} swiglu={swiglu}: "
        f"max abs {abs_err:.2e}, rel {rel_err:.2e}"
    )
    assert rel_err <= 1e-4
    np.testing.assert_allclose(got["x_norm_clstoken"], want[:, 0], atol=1e-4 * np.abs(want).max())
    np.testing.assert_allclose(
        got["x_norm_regtokens"], want[:, 1 : 1 + registers], atol=1e-4 * np.abs(want).max()
    )


def test_resampled_table_is_repas(tmp_dir):
    """REPA's path: a 7x7-patch table resampled once (timm, antialiased bicubic) to 4x4."""
    path = saved_hf(tmp_dir, 98)
    module = flax_model(4)
    params = convert_dinov2.convert(load_state_dict(path, "test"), path, expected_params(module))

    reference = hf_model(98)
    table = reference.embeddings.position_embeddings.detach()
    grid = table[:, 1:].reshape(1, 7, 7, DIM).permute(0, 3, 1, 2)
    grid = torch.nn.functional.interpolate(grid, size=(4, 4), mode="bicubic", antialias=True)
    table = torch.cat([table[:, :1], grid.permute(0, 2, 3, 1).reshape(1, 16, DIM)], dim=1)
    np.testing.assert_allclose(params["pos_embed"], table.numpy(), atol=1e-5)

    # A 56-px model carrying the resampled table runs without interpolation, as REPA's does.
    native = hf_model(56)
    state = reference.state_dict()
    state["embeddings.position_embeddings"] = table
    native.load_state_dict(state)
    images = np.random.default_rng(1).normal(size=(2, 56, 56, 3)).astype(np.float32)
    with torch.no_grad():
        want = native(torch.from_numpy(images).permute(0, 3, 1, 2)).last_hidden_state.numpy()
    got = module.apply({"params": params}, images)["x_norm_patchtokens"]
    assert relative_error(np.asarray(got), want[:, 1:])[1] <= 1e-4


def torch_hub_state_dict(hf_state: dict, swiglu: bool) -> dict:
    """The facebookresearch/dinov2 naming of the same weights, written out independently."""
    out = {
        "cls_token": hf_state["embeddings.cls_token"],
        "mask_token": hf_state["embeddings.mask_token"],
        "pos_embed": hf_state["embeddings.position_embeddings"],
        "patch_embed.proj.weight": hf_state["embeddings.patch_embeddings.projection.weight"],
        "patch_embed.proj.bias": hf_state["embeddings.patch_embeddings.projection.bias"],
        "norm.weight": hf_state["layernorm.weight"],
        "norm.bias": hf_state["layernorm.bias"],
    }
    if "embeddings.register_tokens" in hf_state:
        out["register_tokens"] = hf_state["embeddings.register_tokens"]
    for i in range(DEPTH):
        hf, hub = f"encoder.layer.{i}", f"blocks.{i}"
        attn = f"{hf}.attention.attention"
        for p in ("weight", "bias"):
            out[f"{hub}.attn.qkv.{p}"] = np.concatenate(
                [hf_state[f"{attn}.{n}.{p}"] for n in ("query", "key", "value")]
            )
            out[f"{hub}.attn.proj.{p}"] = hf_state[f"{hf}.attention.output.dense.{p}"]
            for n in ("norm1", "norm2"):
                out[f"{hub}.{n}.{p}"] = hf_state[f"{hf}.{n}.{p}"]
            mlp = (("w12", "weights_in"), ("w3", "weights_out")) if swiglu else ("fc1", "fc2")
            for ours, theirs in mlp if swiglu else zip(mlp, mlp, strict=True):
                out[f"{hub}.mlp.{ours}.{p}"] = hf_state[f"{hf}.mlp.{theirs}.{p}"]
        out[f"{hub}.ls1.gamma"] = hf_state[f"{hf}.layer_scale1.lambda1"]
        out[f"{hub}.ls2.gamma"] = hf_state[f"{hf}.layer_scale2.lambda1"]
    return out


@pytest.mark.parametrize("registers, swiglu", [(0, False), (4, True)])
def test_torch_hub_naming_converts_to_the_same_params(tmp_dir, tmp_path, registers, swiglu):
    path = saved_hf(tmp_dir, 98, registers, swiglu)
    hf_state = load_state_dict(path, "test")
    hub_file = tmp_path / "dinov2_vits14_pretrain.pth"
    hub_state = torch_hub_state_dict(hf_state, swiglu)
    torch.save({k: torch.from_numpy(np.array(v)) for k, v in hub_state.items()}, hub_file)

    expected = expected_params(flax_model(4, registers, swiglu))
    from_hf = convert_dinov2.from_hf(hf_state, path, expected)
    from_hub = convert_dinov2.convert(load_state_dict(str(hub_file), "test"), "hub", expected)
    jax.tree.map(np.testing.assert_array_equal, from_hub, from_hf)


def test_errors_name_the_key(tmp_dir):
    path = saved_hf(tmp_dir, 98)
    state = load_state_dict(path, "test")
    expected = expected_params(flax_model(7))

    missing = dict(state)
    del missing["encoder.layer.1.norm2.bias"]
    with pytest.raises(KeyError, match=r"no key 'encoder.layer.1.norm2.bias'"):
        convert_dinov2.convert(missing, "ckpt", expected)

    extra = dict(state, **{"encoder.layer.2.norm1.weight": np.zeros(DIM, np.float32)})
    with pytest.raises(KeyError, match=r"unexpected keys 'encoder.layer.2.norm1.weight'"):
        convert_dinov2.convert(extra, "ckpt", expected)

    wrong = dict(state, **{"layernorm.bias": np.zeros(DIM + 1, np.float32)})
    with pytest.raises(ValueError, match=r"key 'layernorm.bias' gives shape \(65,\) for norm/bias"):
        convert_dinov2.convert(wrong, "ckpt", expected)

    with pytest.raises(ValueError, match="not a DINOv2 checkpoint"):
        convert_dinov2.convert({"conv1.weight": np.zeros(1)}, "ckpt", expected)
