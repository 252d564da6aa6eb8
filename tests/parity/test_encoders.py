"""load_encoder end to end: registry entry + checkpoint + REPA preprocessing, against the torch
pipeline REPA runs (x / 255, normalise, F.interpolate bicubic, the torch model)."""

import dataclasses

import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from sara_jax.config import base_config  # noqa: E402
from sara_jax.converters.saved import save_converted  # noqa: E402
from sara_jax.encoders import registry  # noqa: E402
from sara_jax.encoders.load import converted_info, load_encoder  # noqa: E402
from sara_jax.encoders.registry import CLIP_MEAN, CLIP_STD, ENCODERS, EncoderSpec  # noqa: E402

TINY = dict(patch_size=14, embed_dim=32, depth=2, num_heads=2)
IMAGES = np.random.default_rng(0).integers(0, 256, size=(2, 64, 64, 3), dtype=np.uint8)


@pytest.fixture(autouse=True)
def tiny_encoders(monkeypatch):
    """Small registry entries: a DINOv2 with registers and a CLIP, random init."""
    monkeypatch.setitem(
        ENCODERS, "dinov2_tiny", EncoderSpec(family="dinov2", num_register_tokens=4, **TINY)
    )
    clip = EncoderSpec(family="clip", mean=CLIP_MEAN, std=CLIP_STD, resize_first=True, **TINY)
    monkeypatch.setitem(ENCODERS, "clip_tiny", clip)


def encoder_config(name: str, checkpoint: str):
    c = base_config()
    c.encoder.name, c.encoder.checkpoint = name, checkpoint
    c.encoder.image_size, c.encoder.compute_dtype = 56, "float32"
    return c


def torch_inputs(mean, std, resize_first: bool) -> "torch.Tensor":
    x = torch.from_numpy(IMAGES).permute(0, 3, 1, 2).float() / 255.0

    def norm(x):
        return (x - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]

    def resize(x):
        return torch.nn.functional.interpolate(x, 56, mode="bicubic")

    return norm(resize(x)) if resize_first else resize(norm(x))


def tiny_dinov2(tmp_path) -> tuple[str, "torch.nn.Module"]:
    """A 70-px (5x5) HF DINOv2 saved to disk, and the 56-px torch model REPA would build
    from it: the same weights with the table resampled by timm's recipe."""
    torch.manual_seed(0)
    config = transformers.Dinov2WithRegistersConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=70,
        patch_size=14,
        num_register_tokens=4,
        layerscale_value=0.5,
    )
    model = transformers.Dinov2WithRegistersModel(config).eval()
    model.save_pretrained(tmp_path / "hf")
    state = model.state_dict()
    table = state["embeddings.position_embeddings"]
    grid = table[:, 1:].reshape(1, 5, 5, 32).permute(0, 3, 1, 2)
    grid = torch.nn.functional.interpolate(grid, size=(4, 4), mode="bicubic", antialias=True)
    state["embeddings.position_embeddings"] = torch.cat(
        [table[:, :1], grid.permute(0, 2, 3, 1).reshape(1, 16, 32)], dim=1
    )
    repa = transformers.Dinov2WithRegistersModel(dataclasses.replace(config, image_size=56))
    repa.load_state_dict(state)
    return str(tmp_path / "hf"), repa.eval()


def assert_close(got, want):
    scale = float(np.abs(want).max())
    assert float(np.abs(np.asarray(got) - want).max()) <= 1e-4 * scale


def test_dinov2_features_match_repas_torch_pipeline(tmp_path):
    path, repa = tiny_dinov2(tmp_path)
    encoder = load_encoder(encoder_config("dinov2_tiny", path), source=None)
    assert (encoder.z_dim, encoder.num_tokens) == (32, 16)
    with torch.no_grad():
        x = torch_inputs(registry.IMAGENET_MEAN, registry.IMAGENET_STD, False)
        want = repa(x).last_hidden_state[:, 1 + 4 :].numpy()
    assert_close(jax.jit(encoder.features)(encoder.params, IMAGES), want)


def test_clip_features_match_repas_torch_pipeline(tmp_path):
    torch.manual_seed(1)
    config = transformers.CLIPVisionConfig(
        hidden_size=32,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=56,
        patch_size=14,
    )
    model = transformers.CLIPVisionModel(config).eval()
    model.save_pretrained(tmp_path / "clip")
    encoder = load_encoder(encoder_config("clip_tiny", str(tmp_path / "clip")), source=None)
    with torch.no_grad():
        want = model(torch_inputs(CLIP_MEAN, CLIP_STD, True)).last_hidden_state[:, 1:].numpy()
    assert_close(encoder.features(encoder.params, IMAGES), want)


def test_converted_params_are_saved_once_and_reused(tmp_path):
    path, _ = tiny_dinov2(tmp_path)
    config = encoder_config("dinov2_tiny", path)
    converted = load_encoder(config, source=None)
    saved = str(tmp_path / "converted")
    save_converted(saved, converted.params, converted_info(config.encoder))

    config.encoder.checkpoint = saved
    restored = load_encoder(config, source=None)
    jax.tree.map(np.testing.assert_array_equal, restored.params, converted.params)

    config.encoder.image_size = 42
    with pytest.raises(ValueError, match=r"converted for image_size=56, but the config asks"):
        load_encoder(config, source=None)


def test_missing_weights_say_where_they_looked_and_what_to_do(tmp_path, monkeypatch):
    missing = str(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match=r"checkpoint='.*nowhere': no such file") as e:
        load_encoder(encoder_config("dinov2_tiny", missing), source=None)
    assert "hf download" in str(e.value)

    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf_cache"))
    with pytest.raises(FileNotFoundError) as e:
        load_encoder(encoder_config("dinov2_tiny", "facebook/dinov2-tiny"), source=None)
    message = str(e.value)
    assert "config.encoder.checkpoint='facebook/dinov2-tiny'" in message
    assert str(tmp_path / "hf_cache") in message
    assert "hf download facebook/dinov2-tiny --local-dir DIR" in message

    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"holds none of model.safetensors"):
        load_encoder(encoder_config("dinov2_tiny", str(tmp_path / "empty")), source=None)
