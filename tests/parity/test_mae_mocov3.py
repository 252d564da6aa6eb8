"""MAE and MoCo v3 ViT-L/16 encoders (sara_jax.convert.mae, .mocov3, DinoV2 without layer scale)
against torch references on small random-weight models: transformers' ViTMAEModel, and a
timm-style ViT written here in timm's state-dict naming (timm is not a dependency), run through
REPA's pipeline (x / 255, ImageNet normalisation, no resize, table resampled by timm's recipe)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from configs import table5_encoders  # noqa: E402
from sara_jax.config import base_config, validate  # noqa: E402
from sara_jax.converters import mae, mocov3  # noqa: E402
from sara_jax.converters.checkpoint import load_state_dict  # noqa: E402
from sara_jax.encoders.load import load_encoder  # noqa: E402
from sara_jax.encoders.registry import ENCODERS, IMAGENET_MEAN, IMAGENET_STD, EncoderSpec  # noqa: E402
from sara_jax.models.dinov2 import DinoV2  # noqa: E402

PATCH, DIM, DEPTH, HEADS = 16, 32, 2, 2
SIZE = 64  # 4 x 4 patches, as REPA's 256 px gives 16 x 16
CKPT_SIZE = 48  # 3 x 3: a table to resample, as ViT-L's 14 x 14 (224 px) is
IMAGES = np.random.default_rng(0).integers(0, 256, size=(2, SIZE, SIZE, 3), dtype=np.uint8)
F = torch.nn.functional


def randomise(module: "torch.nn.Module", seed: int) -> None:
    """Adds N(0, 0.1^2) to every parameter (position table included), so a swapped, missing or
    untransposed tensor shows: inits leave LayerNorms at one and biases at zero."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=gen))


def timm_resample(table: "torch.Tensor", grid: int) -> "torch.Tensor":
    """timm's resample_abs_pos_embed (what REPA calls): the grid rows bicubic, antialiased."""
    side = int((table.shape[1] - 1) ** 0.5)
    patches = table[:, 1:].reshape(1, side, side, -1).permute(0, 3, 1, 2)
    patches = F.interpolate(patches, size=(grid, grid), mode="bicubic", antialias=True)
    return torch.cat([table[:, :1], patches.permute(0, 2, 3, 1).reshape(1, grid * grid, -1)], 1)


def max_diffs(ours, reference) -> tuple[float, float]:
    """(max abs diff, max abs diff / max abs reference)."""
    reference = np.asarray(reference, np.float64)
    diff = float(np.abs(np.asarray(ours, np.float64) - reference).max())
    return diff, diff / float(np.abs(reference).max())


def model(image_size: int, depth: int = DEPTH) -> DinoV2:
    return DinoV2(PATCH, DIM, depth, HEADS, pos_grid=image_size // PATCH, layer_scale=False)


def expected_params(image_size: int = SIZE, depth: int = DEPTH):
    x = jnp.zeros((1, image_size, image_size, 3))
    return jax.eval_shape(model(image_size, depth).init, jax.random.key(0), x)["params"]


# -- MAE vs transformers' ViTMAEModel --------------------------------------------------------


def vitmae_config(image_size: int) -> "transformers.ViTMAEConfig":
    # mask_ratio 0 keeps every patch; MAE's LayerNorm eps is 1e-6 (HF's default is 1e-12).
    return transformers.ViTMAEConfig(
        hidden_size=DIM,
        num_hidden_layers=DEPTH,
        num_attention_heads=HEADS,
        intermediate_size=4 * DIM,
        image_size=image_size,
        patch_size=PATCH,
        mask_ratio=0.0,
        layer_norm_eps=1e-6,
        decoder_hidden_size=16,
        decoder_num_hidden_layers=1,
        decoder_num_attention_heads=2,
        decoder_intermediate_size=32,
    )


@functools.cache
def vitmae(image_size: int) -> "transformers.ViTMAEModel":
    torch.manual_seed(image_size)
    m = transformers.ViTMAEModel(vitmae_config(image_size)).eval()
    randomise(m, seed=image_size)
    return m


def vitmae_tokens(m, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(last block's tokens before the final LayerNorm, after it), CLS first, (B, 1 + N, D)."""
    pixels = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()
    # ViTMAE shuffles the patches by argsort(noise) even when it keeps all of them: ascending
    # noise keeps their order.
    noise = torch.arange(pixels.shape[-1] // PATCH * pixels.shape[-2] // PATCH, dtype=torch.float32)
    with torch.no_grad():
        out = m(pixels, noise=noise.expand(len(x), -1), output_hidden_states=True)
    return out.hidden_states[-1].numpy(), out.last_hidden_state.numpy()


@pytest.mark.parametrize("ckpt_size", [SIZE, CKPT_SIZE])
def test_mae_matches_transformers_vitmae(ckpt_size, tmp_path):
    """facebook/vit-mae-large's naming; at 48 px the table is resampled as REPA does and the
    reference is a 64-px ViTMAEModel holding timm's resampled table."""
    vitmae(ckpt_size).save_pretrained(tmp_path)
    state = load_state_dict(str(tmp_path), "encoder.checkpoint")
    params = mae.convert(state, "tiny", expected_params())
    reference = vitmae(SIZE)
    if ckpt_size != SIZE:
        weights = vitmae(ckpt_size).state_dict()
        table = weights["embeddings.position_embeddings"]
        weights["embeddings.position_embeddings"] = timm_resample(table, SIZE // PATCH)
        reference = transformers.ViTMAEModel(vitmae_config(SIZE)).eval()
        reference.load_state_dict(weights)

    x = np.random.default_rng(1).standard_normal((3, SIZE, SIZE, 3), np.float32)
    out = model(SIZE).apply({"params": params}, jnp.asarray(x))
    prenorm, normed = vitmae_tokens(reference, x)
    abs_diff, rel_diff = max_diffs(out["x_prenorm"][:, 1:], prenorm[:, 1:])
    print(f"MAE vs ViTMAEModel, {ckpt_size} px: max abs {abs_diff:.3g}, rel {rel_diff:.3g}")
    assert rel_diff <= 1e-4
    assert max_diffs(out["x_prenorm"][:, 0], prenorm[:, 0])[1] <= 1e-4
    assert max_diffs(out["x_norm_patchtokens"], normed[:, 1:])[1] <= 1e-4
    # REPA's MAE target skips the final LayerNorm: the normed tokens are a different target.
    assert max_diffs(out["x_norm_patchtokens"], prenorm[:, 1:])[1] > 1e-2


def test_mae_pretraining_checkpoint_converts_alike(tmp_path):
    """ViTMAEForPreTraining (what facebook/vit-mae-large is): `vit.` prefix, decoder ignored."""
    full = transformers.ViTMAEForPreTraining(vitmae_config(SIZE)).eval()
    full.vit.load_state_dict(vitmae(SIZE).state_dict())
    full.save_pretrained(tmp_path / "full")
    state = load_state_dict(str(tmp_path / "full"), "encoder.checkpoint")
    assert any(k.startswith("decoder.") for k in state)
    vitmae(SIZE).save_pretrained(tmp_path / "bare")
    bare = load_state_dict(str(tmp_path / "bare"), "encoder.checkpoint")
    jax.tree.map(
        np.testing.assert_array_equal,
        mae.convert(state, "full", expected_params()),
        mae.convert(bare, "bare", expected_params()),
    )


# -- MAE's own and MoCo v3's checkpoints (timm naming) vs a timm-style torch ViT -------------


class TorchBlock(torch.nn.Module):
    """timm's ViT Block (no layer scale, qkv with bias, exact GELU, LayerNorm eps 1e-6)."""

    def __init__(self):
        super().__init__()
        nn = torch.nn
        self.norm1, self.norm2 = nn.LayerNorm(DIM, eps=1e-6), nn.LayerNorm(DIM, eps=1e-6)
        self.attn, self.mlp = nn.Module(), nn.Module()
        self.attn.qkv, self.attn.proj = nn.Linear(DIM, 3 * DIM), nn.Linear(DIM, DIM)
        self.mlp.fc1, self.mlp.fc2 = nn.Linear(DIM, 4 * DIM), nn.Linear(4 * DIM, DIM)

    def forward(self, x: "torch.Tensor") -> "torch.Tensor":
        b, t, d = x.shape
        qkv = self.attn.qkv(self.norm1(x)).reshape(b, t, 3, HEADS, d // HEADS)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        h = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, t, d)
        x = x + self.attn.proj(h)
        return x + self.mlp.fc2(F.gelu(self.mlp.fc1(self.norm2(x))))


class TorchViT(torch.nn.Module):
    """timm's VisionTransformer up to its final norm, in timm's state-dict naming."""

    def __init__(self, image_size: int, depth: int = DEPTH):
        super().__init__()
        nn = torch.nn
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Conv2d(3, DIM, PATCH, PATCH)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, DIM))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + (image_size // PATCH) ** 2, DIM))
        self.blocks = nn.ModuleList(TorchBlock() for _ in range(depth))
        self.norm = nn.LayerNorm(DIM, eps=1e-6)

    def forward(self, x: "torch.Tensor", final_norm: bool) -> "torch.Tensor":
        """x: (B, 3, H, W) -> tokens (B, 1 + N, D), CLS first."""
        x = self.patch_embed.proj(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(len(x), -1, -1), x], dim=1) + self.pos_embed
        for block in self.blocks:
            x = block(x)
        return self.norm(x) if final_norm else x


@functools.cache
def torch_vits(depth: int = DEPTH) -> tuple[TorchViT, TorchViT]:
    """A random 48-px ViT (the checkpoint) and the 64-px one REPA builds from it."""
    torch.manual_seed(depth)
    ckpt = TorchViT(CKPT_SIZE, depth)
    randomise(ckpt, seed=depth)
    weights = ckpt.state_dict()
    weights["pos_embed"] = timm_resample(weights["pos_embed"], SIZE // PATCH)
    repa = TorchViT(SIZE, depth)
    repa.load_state_dict(weights)
    return ckpt.eval(), repa.eval()


def mocov3_file(ckpt: TorchViT, path) -> str:
    """A MoCo v3 training checkpoint: DDP-wrapped base encoder with its projection head, the
    momentum encoder and the predictor, beside the optimizer state."""
    state = {f"{mocov3.PREFIX}{k}": v for k, v in ckpt.state_dict().items()}
    state |= {
        f"{mocov3.PREFIX}head.0.weight": torch.zeros(8, DIM),
        f"{mocov3.PREFIX}head.1.running_mean": torch.zeros(8),
        "module.momentum_encoder.blocks.0.norm1.weight": torch.ones(DIM),
        "module.predictor.0.weight": torch.zeros(8, 8),
    }
    torch.save({"epoch": 300, "arch": "vit_large", "state_dict": state, "optimizer": {}}, path)
    return str(path)


def mae_file(ckpt: TorchViT, path) -> str:
    """MAE's checkpoint, `{"model": ...}`, with the decoder a full ("visualize") one holds."""
    state = dict(ckpt.state_dict())
    state |= {
        "mask_token": torch.zeros(1, 1, 16),
        "decoder_embed.weight": torch.zeros(16, DIM),
        "decoder_blocks.0.norm1.weight": torch.ones(16),
        "decoder_pos_embed": torch.zeros(1, 10, 16),
        "decoder_pred.bias": torch.zeros(PATCH * PATCH * 3),
    }
    torch.save({"model": state}, path)
    return str(path)


@pytest.fixture
def tiny_encoders(monkeypatch):
    """Registry entries shaped like the tiny torch models."""
    shape = dict(patch_size=PATCH, embed_dim=DIM, depth=DEPTH, num_heads=HEADS, layer_scale=False)
    monkeypatch.setitem(ENCODERS, "mae_tiny", EncoderSpec(family="mae", **shape))
    monkeypatch.setitem(ENCODERS, "mocov3_tiny", EncoderSpec(family="mocov3", **shape))


def repa_features(repa: TorchViT, final_norm: bool) -> np.ndarray:
    """REPA's train.py for MAE / MoCo v3: x / 255, ImageNet mean/std, no resize, CLS dropped."""
    x = torch.from_numpy(IMAGES).permute(0, 3, 1, 2).float() / 255.0
    x = (x - torch.tensor(IMAGENET_MEAN)[:, None, None]) / torch.tensor(IMAGENET_STD)[:, None, None]
    with torch.no_grad():
        return repa(x, final_norm)[:, 1:].numpy()


def encoder_config(name: str, checkpoint: str):
    c = base_config()
    c.encoder.name, c.encoder.checkpoint = name, checkpoint
    c.encoder.image_size, c.encoder.compute_dtype = SIZE, "float32"
    return c


@pytest.mark.parametrize("family", ["mae", "mocov3"])
def test_features_match_repas_torch_pipeline(family, tiny_encoders, tmp_path):
    """load_encoder on a saved .pth (48-px table) against REPA's torch pipeline at 64 px: MAE's
    target is the last block's output, MoCo v3's is after the final LayerNorm."""
    ckpt, repa = torch_vits()
    write = mae_file if family == "mae" else mocov3_file
    # MoCo v3 as published (RCG's vitl.pth.tar); MAE as REPA names it.
    path = write(ckpt, tmp_path / f"{family}.pth" if family == "mae" else tmp_path / "vitl.pth.tar")
    encoder = load_encoder(encoder_config(f"{family}_tiny", path), source=None)
    assert (encoder.z_dim, encoder.num_tokens) == (DIM, (SIZE // PATCH) ** 2)
    got = jax.jit(encoder.features)(encoder.params, IMAGES)
    want = repa_features(repa, final_norm=family == "mocov3")
    abs_diff, rel_diff = max_diffs(got, want)
    print(f"{family} vs REPA's torch pipeline: max abs {abs_diff:.3g}, rel {rel_diff:.3g}")
    assert rel_diff <= 1e-4
    # The other choice of final norm is a visibly different target.
    assert max_diffs(got, repa_features(repa, final_norm=family != "mocov3"))[1] > 1e-2


@functools.cache
def mocov3_state(depth: int = DEPTH) -> dict[str, np.ndarray]:
    ckpt, _ = torch_vits(depth)
    return {f"{mocov3.PREFIX}{k}": v.numpy() for k, v in ckpt.state_dict().items()}


def test_mocov3_misnamed_blocks_are_renamed():
    """The names REPA's fix_mocov3_state_dict repairs in blocks 13 and 14."""
    state = mocov3_state(depth=15)
    bugged = dict(state)
    for wrong, right in mocov3.MISNAMED.items():
        for leaf in ("weight", "bias"):
            bugged[f"{mocov3.PREFIX}{wrong}{leaf}"] = bugged.pop(f"{mocov3.PREFIX}{right}{leaf}")
    expected = expected_params(depth=15)
    jax.tree.map(
        np.testing.assert_array_equal,
        mocov3.convert(bugged, "bugged", expected),
        mocov3.convert(state, "fixed", expected),
    )


def test_mocov3_bad_keys_are_named():
    state = dict(mocov3_state())
    del state[f"{mocov3.PREFIX}blocks.1.mlp.fc2.bias"]
    missing = r"\(keys under 'module\.base_encoder\.'\) has no key 'blocks\.1\.mlp\.fc2\.bias'"
    with pytest.raises(KeyError, match=missing):
        mocov3.convert(state, "moco", expected_params())

    state = dict(mocov3_state())
    state[f"{mocov3.PREFIX}blocks.0.attn.extra.weight"] = np.zeros(3, np.float32)
    with pytest.raises(KeyError, match=r"unexpected keys 'blocks\.0\.attn\.extra\.weight'"):
        mocov3.convert(state, "moco", expected_params())

    # A checkpoint of another width: the first mismatched tensor is named.
    wide = {k: np.zeros(v.shape[:-1] + (2 * DIM,), v.dtype) for k, v in mocov3_state().items()}
    with pytest.raises(ValueError, match=r"key '(cls_token|pos_embed)' gives shape"):
        mocov3.convert(wide, "moco", expected_params())

    # The same tensors without the DDP prefix convert alike.
    bare = {k.removeprefix(mocov3.PREFIX): v for k, v in mocov3_state().items()}
    jax.tree.map(
        np.testing.assert_array_equal,
        mocov3.convert(bare, "bare", expected_params()),
        mocov3.convert(mocov3_state(), "moco", expected_params()),
    )


def test_mae_bad_keys_are_named(tmp_path):
    vitmae(SIZE).save_pretrained(tmp_path)
    state = load_state_dict(str(tmp_path), "encoder.checkpoint")
    prefixed = {f"vit.{k}": v for k, v in state.items()}
    del prefixed["vit.encoder.layer.1.output.dense.weight"]
    with pytest.raises(KeyError, match=r"'vit\.encoder\.layer\.1\.output\.dense\.weight'"):
        mae.convert(prefixed, "tiny", expected_params())
    state["decoder.decoder_norm.weight"] = np.ones(16, np.float32)  # decoder without `vit.`
    with pytest.raises(KeyError, match=r"unexpected keys 'decoder\.decoder_norm\.weight'"):
        mae.convert(state, "tiny", expected_params())
    with pytest.raises(ValueError, match="not an MAE checkpoint"):
        mae.convert({"cls": np.zeros(3)}, "tiny", expected_params())


# -- configs ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["mae_vitl16", "mocov3_vitl16"])
def test_table5_rows_point_at_repas_files(name, tmp_path, monkeypatch):
    c = table5_encoders.get_config(f"{name},repa,8")
    validate(c, num_devices=8)
    assert c.encoder.image_size == 256 and c.encoder.checkpoint == table5_encoders.REPA_FILES[name]
    monkeypatch.chdir(tmp_path)  # no ./ckpts here
    with pytest.raises(FileNotFoundError, match=r"not on the Hugging Face hub: download https://"):
        load_encoder(c, source=None)
    c.encoder.checkpoint = ""
    with pytest.raises(ValueError, match=r"encoder.checkpoint must be .*published: 'https://"):
        validate(c)
