"""AutoencoderKL with converted weights against diffusers' torch AutoencoderKL (random init)."""

import json
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")

from safetensors.numpy import load_file, save_file  # noqa: E402

from sara_jax.converters import vae as convert_vae  # noqa: E402
from sara_jax.converters.vae import load_vae  # noqa: E402
from sara_jax.models.vae import AutoencoderKL  # noqa: E402

CHANNELS, LATENT = (32, 64), 4
WEIGHTS = "diffusion_pytorch_model.safetensors"


def torch_model():
    """A small random-init diffusers AutoencoderKL, every param perturbed (GroupNorm affines
    and biases away from 1 and 0), logvar pushed past both clip bounds in two channels."""
    torch.manual_seed(0)
    model = diffusers.AutoencoderKL(
        block_out_channels=CHANNELS,
        layers_per_block=1,
        norm_num_groups=8,
        latent_channels=LATENT,
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
    )
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim == 1:
                p.add_(0.3 * torch.randn_like(p))
            else:
                p.mul_(1 + 0.2 * torch.randn_like(p))
        # Channels LATENT and LATENT + 1 of the moments are logvars 0 and 1: clipped at 20, -30.
        model.quant_conv.bias[LATENT] += 60.0
        model.quant_conv.bias[LATENT + 1] -= 60.0
    return model.eval().float()


def relative_error(got, want) -> tuple[float, float]:
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    diff = float(np.abs(got - want).max())
    return diff, diff / float(np.abs(want).max())


def nchw(x: np.ndarray) -> "torch.Tensor":
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


def nhwc(x: "torch.Tensor") -> np.ndarray:
    return x.detach().numpy().transpose(0, 2, 3, 1)


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> dict:
    """The torch model, its save_pretrained directory, inputs and torch's outputs."""
    model = torch_model()
    path = tmp_path_factory.mktemp("vae") / "small_vae"
    model.save_pretrained(path)
    rng = np.random.default_rng(0)
    # Non-square, so a swapped H / W anywhere shows.
    images = rng.uniform(-1, 1, (2, 32, 48, 3)).astype(np.float32)
    latents = rng.normal(size=(2, 16, 24, LATENT)).astype(np.float32)
    with torch.no_grad():
        posterior = model.encode(nchw(images)).latent_dist
        decoded = model.decode(nchw(latents)).sample
    return {
        "model": model,
        "path": path,
        "images": images,
        "latents": latents,
        "mean": nhwc(posterior.mean),
        "std": nhwc(posterior.std),
        "decoded": nhwc(decoded),
    }


@pytest.fixture(scope="module")
def loaded(saved) -> tuple[AutoencoderKL, dict]:
    return load_vae(str(saved["path"]), "test")


def run(module: AutoencoderKL, params, x: np.ndarray, method: str):
    return jax.jit(lambda p, x: module.apply({"params": p}, x, method=method))(params, x)


def test_config_from_directory(loaded):
    module, _ = loaded
    assert module.block_out_channels == CHANNELS
    assert (module.layers_per_block, module.latent_channels, module.norm_num_groups) == (1, 4, 8)
    assert module.downsample_factor == 2


def test_encode_matches_diffusers(saved, loaded):
    module, params = loaded
    mean, std = run(module, params, saved["images"], "encode")
    assert mean.shape == std.shape == (2, 16, 24, LATENT)
    assert mean.dtype == std.dtype == jnp.float32
    for name, got, want in (
        ("mean", mean, saved["mean"]),
        # Channels 0 and 1 sit at the clip bounds (checked below).
        ("std", np.asarray(std)[..., 2:], saved["std"][..., 2:]),
        ("log std", np.log(std), np.log(saved["std"])),
    ):
        diff, rel = relative_error(got, want)
        print(f"encode {name}: max abs diff {diff:.3g}, relative {rel:.3g}")
        assert rel <= 1e-4, name
    # The clip bounds were reached (channels 0 and 1 of logvar).
    np.testing.assert_allclose(np.asarray(std)[..., 0], np.exp(10.0), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(std)[..., 1], np.exp(-15.0), rtol=1e-6)


def test_decode_matches_diffusers(saved, loaded):
    module, params = loaded
    decoded = run(module, params, saved["latents"], "decode")
    assert decoded.shape == (2, 32, 48, 3) and decoded.dtype == jnp.float32
    diff, rel = relative_error(decoded, saved["decoded"])
    print(f"decode: max abs diff {diff:.3g}, relative {rel:.3g}")
    assert rel <= 1e-4


def test_bfloat16_close(saved, loaded):
    module32, params = loaded
    module, params16 = load_vae(str(saved["path"]), "test", dtype=jnp.bfloat16)
    assert module.dtype == jnp.bfloat16
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(params16))
    mean, std = run(module, params16, saved["images"], "encode")
    decoded = run(module, params16, saved["latents"], "decode")
    assert mean.dtype == std.dtype == decoded.dtype == jnp.float32
    for name, got, want in (
        ("mean", mean, saved["mean"]),
        ("log std", np.log(std), np.log(saved["std"])),
        ("decode", decoded, saved["decoded"]),
    ):
        diff, rel = relative_error(got, want)
        print(f"bf16 {name}: max abs diff {diff:.3g}, relative {rel:.3g}")
        assert rel <= 5e-2, name
    # bf16 actually changed something (the dtype reached the convs).
    assert relative_error(mean, run(module32, params, saved["images"], "encode")[0])[0] > 0


def test_call_reconstructs_mean(saved, loaded):
    module, params = loaded
    images = saved["images"][:1]
    recon = run(module, params, images, "__call__")
    mean, _ = run(module, params, images, "encode")
    np.testing.assert_allclose(recon, run(module, params, mean, "decode"), rtol=1e-5, atol=1e-5)


def _state_dict(saved) -> dict[str, np.ndarray]:
    return load_file(saved["path"] / WEIGHTS)


@pytest.fixture(scope="module")
def expected(loaded):
    return convert_vae.expected_params(loaded[0])


def test_legacy_attention_names_convert_alike(saved, loaded, expected):
    _, params = loaded
    names = {"to_q": "query", "to_k": "key", "to_v": "value", "to_out.0": "proj_attn"}
    pattern = re.compile(r"(.*\.attentions\.0)\.(to_q|to_k|to_v|to_out\.0)\.(weight|bias)")
    for as_conv in (False, True):
        legacy = {}
        for key, value in _state_dict(saved).items():
            match = pattern.fullmatch(key)
            if match:
                prefix, name, leaf = match.groups()
                key = f"{prefix}.{names[name]}.{leaf}"
                if as_conv and leaf == "weight":
                    value = value[:, :, None, None]  # a 1x1 conv projection
            legacy[key] = value
        assert "encoder.mid_block.attentions.0.proj_attn.weight" in legacy
        got = convert_vae.from_diffusers(legacy, "legacy", expected)
        jax.tree.map(np.testing.assert_array_equal, got, jax.tree.map(np.asarray, params))


def test_missing_key_named(saved, expected):
    state_dict = _state_dict(saved)
    del state_dict["encoder.mid_block.resnets.0.conv1.bias"]
    with pytest.raises(KeyError, match=r"encoder\.mid_block\.resnets\.0\.conv1\.bias"):
        convert_vae.from_diffusers(state_dict, "ckpt", expected)


def test_unexpected_key_named(saved, expected):
    state_dict = _state_dict(saved)
    state_dict["decoder.up_blocks.1.resnets.9.conv1.weight"] = np.zeros((1,), np.float32)
    with pytest.raises(KeyError, match=r"decoder\.up_blocks\.1\.resnets\.9\.conv1\.weight"):
        convert_vae.from_diffusers(state_dict, "ckpt", expected)


@pytest.mark.parametrize(
    "key, shape",
    [
        ("decoder.conv_in.weight", (64, 4, 3, 1)),
        ("encoder.mid_block.attentions.0.to_k.weight", (64, 32)),
        ("encoder.mid_block.attentions.0.to_k.weight", (64,)),
        ("quant_conv.bias", (4,)),
    ],
)
def test_shape_mismatch_named(saved, expected, key, shape):
    state_dict = _state_dict(saved)
    state_dict[key] = np.zeros(shape, np.float32)
    with pytest.raises(ValueError, match=re.escape(repr(key))):
        convert_vae.from_diffusers(state_dict, "ckpt", expected)


def test_ldm_layout_rejected(saved, expected):
    state_dict = {f"first_stage_model.{k}": v for k, v in _state_dict(saved).items()}
    with pytest.raises(ValueError, match="CompVis/ldm"):
        convert_vae.from_diffusers(state_dict, "ckpt", expected)


def test_weight_file_assumes_sd_config(saved):
    # A bare weight file means Stable Diffusion's config, which this small checkpoint is not:
    # the error names the field and the file.
    weights = saved["path"] / WEIGHTS
    with pytest.raises((KeyError, ValueError), match=r"vae_field=.*" + re.escape(str(weights))):
        load_vae(str(weights), "vae_field")
    module = convert_vae.module_from_config(convert_vae.SD_CONFIG, "sd")
    assert module.block_out_channels == (128, 256, 512, 512)
    assert module.downsample_factor == 8


def test_directory_errors_name_field(saved, tmp_path):
    with pytest.raises(FileNotFoundError, match="vae_field"):
        load_vae(str(tmp_path / "nothing_here"), "vae_field")
    save_file(_state_dict(saved), str(tmp_path / WEIGHTS))
    with pytest.raises(FileNotFoundError, match=r"vae_field=.*config\.json"):
        load_vae(str(tmp_path), "vae_field")
    config = json.loads((saved["path"] / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "act_fn": "relu"}))
    with pytest.raises(ValueError, match=r"vae_field=.*act_fn='relu'"):
        load_vae(str(tmp_path), "vae_field")


def test_encode_rejects_indivisible_size(loaded):
    module, params = loaded
    with pytest.raises(ValueError, match="multiple"):
        module.apply({"params": params}, np.zeros((1, 33, 32, 3), np.float32), method="encode")


def test_group_norm_two_pass_eps_1e6():
    # Mean 5, spread 1e-2: shows the epsilon (1e-6 against a 1e-4 variance) and a one-pass
    # E[x^2] - E[x]^2 variance, which cancels in float32 (6% off here; torch's CPU GroupNorm
    # is itself 1% off, so the reference is float64 numpy).
    from sara_jax.models.vae import group_norm

    rng = np.random.default_rng(1)
    x = (5.0 + 1e-2 * rng.normal(size=(2, 4, 6, 16))).astype(np.float32)
    scale, bias = rng.normal(size=(2, 16)).astype(np.float32)
    groups = x.astype(np.float64).reshape(2, 24, 4, 4)  # (B, H*W, groups, channels per group)
    mean = groups.mean(axis=(1, 3), keepdims=True)
    var = groups.var(axis=(1, 3), keepdims=True)
    want = ((groups - mean) / np.sqrt(var + 1e-6)).reshape(x.shape) * scale + bias
    got = group_norm(4, "norm").apply({"params": {"scale": scale, "bias": bias}}, x)
    diff, rel = relative_error(got, want)
    assert rel <= 1e-4, (diff, rel)


def test_hub_id_reads_config_and_weights(saved, loaded, monkeypatch):
    # A stand-in for the hub that serves the saved directory's files.
    import huggingface_hub
    from huggingface_hub import errors

    requested = []

    def download(repo: str, filename: str) -> str:
        requested.append((repo, filename))
        if not (saved["path"] / filename).is_file():
            raise errors.EntryNotFoundError(f"{repo} has no {filename}")
        return str(saved["path"] / filename)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", download)
    module, params = load_vae("no-such-org/small-vae", "test")
    assert ("no-such-org/small-vae", "config.json") in requested
    assert module == loaded[0]
    jax.tree.map(np.testing.assert_array_equal, params, loaded[1])
