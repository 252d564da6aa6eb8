"""Tests for sara_jax.converters.sit and sara_jax.training.converted (the denoiser mode of
sara_jax.convert): SiT, REPA and iREPA checkpoints in their PyTorch layout -> a TrainState.

The references: random weights under REPA's and SiT's key names (REPA's registration order),
a compact torch forward of their SiT written here from the published architecture, and
torch.optim.AdamW itself for the optimizer state.
"""

import argparse
import fractions
import math
import pickle
from collections import Counter

import jax
import numpy as np
import optax
import pytest
from flax import traverse_util
from helpers import tiny_config

from sara_jax.converters import sit
from sara_jax.converters.checkpoint import read_torch_file
from sara_jax.encoders.registry import encoder_width
from sara_jax.models.sit import sincos_pos_embed_2d
from sara_jax.training.converted import denoiser_state
from sara_jax.training.state import build_models, create_train_state, make_optimizer

torch = pytest.importorskip("torch")
F = torch.nn.functional

STEPS = 123
LR = 1e-3


def sit_state_dict(config, seed: int, *, learn_sigma: bool, projector: bool) -> dict:
    """Random torch weights for config.model in REPA's (and SiT's) naming and order."""
    m = config.model
    d, p, c = m.hidden_size, m.patch_size, m.in_channels
    gen = torch.Generator().manual_seed(seed)
    shapes = {
        "x_embedder.proj.weight": (d, c, p, p),
        "x_embedder.proj.bias": (d,),
        "t_embedder.mlp.0.weight": (d, 256),
        "t_embedder.mlp.0.bias": (d,),
        "t_embedder.mlp.2.weight": (d, d),
        "t_embedder.mlp.2.bias": (d,),
        "y_embedder.embedding_table.weight": (m.num_classes + 1, d),
    }
    width = int(d * m.mlp_ratio)
    for i in range(m.depth):
        for name, out, inp in (
            ("attn.qkv", 3 * d, d),
            ("attn.proj", d, d),
            ("mlp.fc1", width, d),
            ("mlp.fc2", d, width),
            ("adaLN_modulation.1", 6 * d, d),
        ):
            shapes[f"blocks.{i}.{name}.weight"] = (out, inp)
            shapes[f"blocks.{i}.{name}.bias"] = (out,)
    if projector:
        z_dim, pw = encoder_width(config.encoder), config.projector.width
        for name, out, inp in (("0", pw, d), ("2", pw, pw), ("4", z_dim, pw)):
            shapes[f"projectors.0.{name}.weight"] = (out, inp)
            shapes[f"projectors.0.{name}.bias"] = (out,)
    out_channels = 2 * c if learn_sigma else c
    shapes["final_layer.linear.weight"] = (p * p * out_channels, d)
    shapes["final_layer.linear.bias"] = (p * p * out_channels,)
    shapes["final_layer.adaLN_modulation.1.weight"] = (2 * d, d)
    shapes["final_layer.adaLN_modulation.1.bias"] = (2 * d,)
    table = sincos_pos_embed_2d(d, m.input_size // p)[None]
    weights = {"pos_embed": torch.from_numpy(table)}  # First: SiT's own parameter.
    weights |= {k: 0.1 * torch.randn(s, generator=gen) for k, s in shapes.items()}
    return weights


def repa_checkpoint(config, seed: int = 0, steps: int = STEPS) -> dict:
    """A REPA train.py checkpoint for config's model: its weights and AdamW state after three
    steps on random gradients, an EMA near them, `args` and `steps`."""
    model = sit_state_dict(config, seed, learn_sigma=False, projector=True)
    params = [torch.nn.Parameter(v, requires_grad=k != "pos_embed") for k, v in model.items()]
    optimizer = torch.optim.AdamW(params, lr=LR, weight_decay=0.0)
    gen = torch.Generator().manual_seed(seed + 1)
    for _ in range(3):
        for param in params:
            if param.requires_grad:
                param.grad = torch.randn(param.shape, generator=gen)
        optimizer.step()
    model = {k: param.detach().clone() for k, param in zip(model, params, strict=True)}
    ema = {k: v if k == "pos_embed" else v + 0.01 * torch.randn_like(v) for k, v in model.items()}
    args = argparse.Namespace(
        model="SiT-T/4", enc_type="dinov2-vit-b", encoder_depth=config.model.encoder_depth,
        path_type="linear",
    )  # fmt: skip
    return {"model": model, "ema": ema, "opt": optimizer.state_dict(), "args": args, "steps": steps}


def torch_sit(weights: dict, x, t, y, num_heads: int, encoder_depth: int):
    """The SiT/REPA forward: (output (B, C_out, H, W), projected block-`encoder_depth` tokens or
    None)."""
    w = {k: torch.as_tensor(v) for k, v in weights.items()}

    def dense(h, name):
        return F.linear(h, w[f"{name}.weight"], w[f"{name}.bias"])

    def modulate(h, shift, scale):
        return F.layer_norm(h, h.shape[-1:], eps=1e-6) * (1 + scale[:, None]) + shift[:, None]

    p = w["x_embedder.proj.weight"].shape[-1]
    h = F.conv2d(x, w["x_embedder.proj.weight"], w["x_embedder.proj.bias"], stride=p)
    h = h.flatten(2).transpose(1, 2) + w["pos_embed"]
    batch, tokens, dim = h.shape
    freqs = torch.exp(-math.log(10000) * torch.arange(128, dtype=torch.float32) / 128)
    angles = t[:, None].float() * freqs[None]
    t_freq = torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)
    c = dense(F.silu(dense(t_freq, "t_embedder.mlp.0")), "t_embedder.mlp.2")
    c = c + w["y_embedder.embedding_table.weight"][y]
    projected = None
    for i in range(sum(k.endswith("attn.qkv.weight") for k in w)):
        b = f"blocks.{i}"
        s1, c1, g1, s2, c2, g2 = dense(F.silu(c), f"{b}.adaLN_modulation.1").chunk(6, dim=-1)
        qkv = dense(modulate(h, s1, c1), f"{b}.attn.qkv")
        q, k, v = qkv.reshape(batch, tokens, 3, num_heads, -1).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(batch, tokens, dim)
        h = h + g1[:, None] * dense(a, f"{b}.attn.proj")
        hidden = F.gelu(dense(modulate(h, s2, c2), f"{b}.mlp.fc1"), approximate="tanh")
        h = h + g2[:, None] * dense(hidden, f"{b}.mlp.fc2")
        for mlp in ("projectors.0", IREPA):  # REPA's MLP, or iREPA's.
            if i + 1 == encoder_depth and f"{mlp}.0.weight" in w:
                z = F.silu(dense(F.silu(dense(h, f"{mlp}.0")), f"{mlp}.2"))
                projected = dense(z, f"{mlp}.4")
        if i + 1 == encoder_depth and f"{IREPA}.weight" in w:  # iREPA's conv projector.
            projected = torch_conv_projector(w[f"{IREPA}.weight"], w[f"{IREPA}.bias"], h)
    shift, scale = dense(F.silu(c), "final_layer.adaLN_modulation.1").chunk(2, dim=-1)
    out = dense(modulate(h, shift, scale), "final_layer.linear")
    grid = math.isqrt(tokens)
    out = out.reshape(batch, grid, grid, p, p, -1).permute(0, 5, 1, 3, 2, 4)
    return out.reshape(batch, -1, grid * p, grid * p), projected


IREPA = "projectors.0.projection_layer"


def torch_conv_projector(weight, bias, tokens):
    """iREPA's projector: torch's nn.Conv2d(hidden, z_dim, k, padding=k // 2) on the tokens'
    grid (B, N, hidden) -> (B, N, z_dim)."""
    batch, n, hidden = tokens.shape
    z_dim, _, k, _ = weight.shape
    layer = torch.nn.Conv2d(hidden, z_dim, k, padding=k // 2)
    with torch.no_grad():
        layer.weight.copy_(weight)
        layer.bias.copy_(bias)
        side = math.isqrt(n)
        out = layer(tokens.reshape(batch, side, side, hidden).permute(0, 3, 1, 2))
    return out.permute(0, 2, 3, 1).reshape(batch, n, z_dim)


def irepa_checkpoint(config, kind: str, kernel_size: int = 3, seed: int = 0) -> dict:
    """An iREPA ldm/train.py checkpoint: REPA's entries, the projector named
    `projectors.0.projection_layer` (a Conv2d, or the MLP's Linears 0, 2, 4)."""
    contents = repa_checkpoint(config, seed)
    z_dim, d = encoder_width(config.encoder), config.model.hidden_size
    gen = torch.Generator().manual_seed(seed + 2)
    conv = {
        f"{IREPA}.weight": 0.1 * torch.randn((z_dim, d, kernel_size, kernel_size), generator=gen),
        f"{IREPA}.bias": 0.1 * torch.randn((z_dim,), generator=gen),
    }
    for entry in ("model", "ema"):
        weights = {}
        for key, value in contents[entry].items():
            if key.startswith("projectors.0."):
                if kind == "conv":
                    continue
                key = key.replace("projectors.0.", f"{IREPA}.")
            weights[key] = value
        contents[entry] = {**weights, **conv} if kind == "conv" else weights
    if kind == "conv":
        del contents["opt"]  # Its params are REPA's MLP.
    args = vars(contents["args"])
    args.update(projection_layer_type=kind, proj_kwargs_kernel_size=kernel_size)
    args.update(spnorm_method="zscore", zscore_alpha=0.6)
    return contents


def saved_and_read(obj, path):
    """`obj` written by torch.save and read back as the converter reads it."""
    torch.save(obj, path)
    return read_torch_file(path)


def inputs(config, seed: int = 0):
    """(x NHWC numpy, t, y) for a batch of 3, the null class among the labels."""
    m = config.model
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(3, m.input_size, m.input_size, m.in_channels)).astype(np.float32)
    t = np.array([0.05, 0.5, 0.9], np.float32)
    y = np.array([0, 3, m.num_classes], np.int32)
    return x, t, y


def run_jax(config, params, x, t, y):
    models = build_models(config, encoder_width(config.encoder))
    out, hidden = models.sit.apply({"params": params["sit"]}, x, t, y)
    projected = models.projector.apply({"params": params["projector"]}, hidden)
    return np.asarray(out), np.asarray(projected)


def run_torch(config, weights, x, t, y):
    out, projected = torch_sit(
        weights, torch.from_numpy(x).permute(0, 3, 1, 2), torch.from_numpy(t),
        torch.from_numpy(y).long(), config.model.num_heads, config.model.encoder_depth,
    )  # fmt: skip
    return out.permute(0, 2, 3, 1).numpy(), projected


@pytest.fixture(scope="module")
def repa(tmp_path_factory):
    """(config, the REPA checkpoint as read back from disk, the converted TrainState)."""
    config = tiny_config(**{"optim.lr": LR})
    path = tmp_path_factory.mktemp("repa") / "0000123.pt"
    contents = saved_and_read(repa_checkpoint(config), path)
    return config, contents, denoiser_state(config, contents, "repa", "repa.pt")


def assert_matches_torch(config, state, contents) -> None:
    """The converted params and EMA params give the torch forward's output and projection."""
    assert int(state.step) == STEPS
    x, t, y = inputs(config)
    for params, weights in ((state.params, contents["model"]), (state.ema_params, contents["ema"])):
        out, projected = run_jax(config, params, x, t, y)
        ref_out, ref_projected = run_torch(config, weights, x, t, y)
        np.testing.assert_allclose(out, ref_out, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(projected, ref_projected.numpy(), rtol=1e-5, atol=1e-5)


def test_repa_params_ema_and_projector_match_the_torch_forward(repa):
    config, contents, state = repa
    assert_matches_torch(config, state, contents)


def fingerprint(value) -> bytes:
    """The multiset of a tensor's values: unchanged by transposes and reshapes."""
    return np.sort(np.asarray(value, np.float32).ravel()).tobytes()


def test_every_tensor_lands_in_exactly_one_param(repa):
    _, contents, state = repa
    for weights, params in ((contents["model"], state.params), (contents["ema"], state.ema_params)):
        tensors = Counter(fingerprint(v) for k, v in weights.items() if k != "pos_embed")
        leaves = Counter(fingerprint(v) for v in jax.tree.leaves(params))
        assert tensors == leaves


@pytest.mark.parametrize(
    "change,message",
    [
        (lambda w: w.update({"blocks.0.attn.q_norm.weight": np.ones(16, np.float32)}),
         "unexpected keys 'blocks.0.attn.q_norm.weight'"),
        (lambda w: w.pop("blocks.1.mlp.fc2.bias"), "no key 'blocks.1.mlp.fc2.bias'"),
        (lambda w: w.update(pos_embed=w["pos_embed"][:, ::-1].copy()),
         "'pos_embed' is not the fixed 2D sin-cos table"),
    ],
)  # fmt: skip
def test_a_key_left_over_or_missing_is_named(repa, change, message):
    _, contents, state = repa
    weights = dict(contents["ema"])
    change(weights)
    with pytest.raises((KeyError, ValueError), match=message):
        sit.convert(weights, state.params, "repa", "repa.pt ema")


@pytest.mark.parametrize(
    "overrides,message",
    [
        ({"model.hidden_size": 64, "model.num_heads": 4},
         r"'x_embedder.proj.weight' has shape \(32, 3, 4, 4\), the config's model needs "
         r"\(64, 3, 4, 4\); change config.model.hidden_size"),
        ({"model.depth": 3}, "2 blocks .*config.model.depth"),
        ({"model.mlp_ratio": 2.0}, r"\(64, 32\); change config.model.mlp_ratio"),
        ({"projector.width": 64}, r"'projectors.0.0.weight' .* config.projector.width"),
        ({"model.encoder_depth": 2}, r"block 1, the config block 2.*model.encoder_depth=1"),
    ],
)  # fmt: skip
def test_a_checkpoint_of_another_shape_is_named(repa, overrides, message):
    _, contents, _ = repa
    with pytest.raises(ValueError, match=message):
        denoiser_state(tiny_config(**overrides), contents, "repa", "repa.pt")


@pytest.mark.parametrize(
    "fmt,overrides,message",
    [
        ("repa", {"model.family": "dit", "sample.method": "ddpm"},
         "converts a family 'sit' model, but config.model.family='dit'"),
        ("sit", {}, "takes the released bare state dict"),
    ],
)  # fmt: skip
def test_the_format_must_fit_the_file_and_the_config(repa, fmt, overrides, message):
    _, contents, _ = repa
    with pytest.raises(ValueError, match=message):
        denoiser_state(tiny_config(**overrides), contents, fmt, "repa.pt")


def test_one_optax_step_from_the_converted_state_equals_one_torch_adamw_step(repa, tmp_path):
    config, contents, state = repa
    assert (config.optim.grad_clip, config.optim.weight_decay) == (1.0, 0.0)
    o = config.optim
    names = list(contents["model"])
    params = [
        torch.nn.Parameter(torch.from_numpy(v.copy()), requires_grad=k != "pos_embed")
        for k, v in contents["model"].items()
    ]
    optimizer = torch.optim.AdamW(
        params, lr=o.lr, betas=(o.b1, o.b2), eps=o.eps, weight_decay=o.weight_decay
    )
    optimizer.load_state_dict(repa_checkpoint(config)["opt"])  # The file's, as torch has it.
    gen = torch.Generator().manual_seed(7)
    grads = {}
    for name, param in zip(names, params, strict=True):
        if param.requires_grad:
            param.grad = torch.randn(param.shape, generator=gen)
            grads[name] = param.grad.numpy().copy()
    norm = torch.nn.utils.clip_grad_norm_([p for p in params if p.requires_grad], 1.0)
    assert norm > 10  # The clip is active.
    optimizer.step()

    tx = make_optimizer(config.optim)
    updates, opt_state = tx.update(
        sit.convert(grads, state.params, "repa", "grads"), state.opt_state, state.params
    )
    new_params = optax.apply_updates(state.params, updates)

    torch_params = {n: p.detach().numpy() for n, p in zip(names, params, strict=True)}
    opt = saved_and_read(optimizer.state_dict(), tmp_path / "opt.pt")
    moments = sit.adamw_moments(opt, names, "torch")
    want = {
        "params": sit.convert(torch_params, state.params, "repa", "torch"),
        "mu": sit.convert(moments[0], state.params, "repa", "torch"),
        "nu": sit.convert(moments[1], state.params, "repa", "torch"),
    }
    got = {
        "params": new_params,
        "mu": optax.tree_utils.tree_get(opt_state, "mu"),
        "nu": optax.tree_utils.tree_get(opt_state, "nu"),
    }
    assert int(optax.tree_utils.tree_get(opt_state, "count")) == moments[2] == 4
    flat_want, flat_got = traverse_util.flatten_dict(want), traverse_util.flatten_dict(got)
    assert flat_want.keys() == flat_got.keys()
    for path, value in flat_want.items():
        np.testing.assert_allclose(flat_got[path], value, rtol=1e-5, atol=1e-7, err_msg=str(path))


def test_sit_release_turns_into_the_velocity_from_data_to_noise(tmp_path):
    config = tiny_config()
    weights = sit_state_dict(config, 0, learn_sigma=True, projector=False)
    contents = saved_and_read(weights, tmp_path / "SiT-T-4.pt")
    state = denoiser_state(config, contents, "sit", "SiT-T-4.pt")
    x, t, y = inputs(config)
    out, _ = run_jax(config, state.ema_params, x, t, y)
    # SiT's time runs from noise (0) to data (1) and its velocity is data - noise.
    ref_out, _ = run_torch(config, contents, x, 1 - t, y)
    np.testing.assert_allclose(out, -ref_out[..., : config.model.in_channels], atol=2e-5)
    jax.tree.map(np.testing.assert_array_equal, state.params, state.ema_params)
    # What the file lacks starts as in a fresh run of the config: projector, D, optimizer.
    models = build_models(config, encoder_width(config.encoder))
    tokens = (config.model.input_size // config.model.patch_size) ** 2
    fresh = jax.jit(lambda key: create_train_state(config, models, tokens, key))(
        jax.random.key(config.seed)
    )
    for a, b in ((state.params["projector"], fresh.params["projector"]), (state.disc, fresh.disc)):
        jax.tree.map(np.testing.assert_array_equal, a, b)
    jax.tree.map(np.testing.assert_array_equal, state.opt_state, fresh.opt_state)
    assert int(state.step) == 0


def test_torch_loading_stays_safe_but_for_argparse_namespace(tmp_path):
    contents = saved_and_read({"args": argparse.Namespace(lr=1.0)}, tmp_path / "ok.pt")
    assert contents["args"].lr == 1.0
    torch.save({"args": fractions.Fraction(1, 3)}, tmp_path / "bad.pt")
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        read_torch_file(tmp_path / "bad.pt")


@pytest.mark.parametrize("kind, kernel_size", [("conv", 3), ("conv", 1), ("mlp", 3)])
def test_irepa_checkpoint_matches_the_torch_forward(kind, kernel_size, tmp_path):
    # The projector's output equals torch's nn.Conv2d (or the MLP) on the SiT's own tokens.
    overrides = {"optim.lr": LR, "projector.kind": kind, "projector.kernel_size": kernel_size}
    config = tiny_config(**overrides)
    contents = saved_and_read(irepa_checkpoint(config, kind, kernel_size), tmp_path / "i.pt")
    state = denoiser_state(config, contents, "irepa", "irepa.pt")
    assert_matches_torch(config, state, contents)
    if kind == "conv":
        kernel = state.params["projector"]["conv"]["kernel"]
        assert kernel.shape == (kernel_size, kernel_size, config.model.hidden_size, 16)


@pytest.mark.parametrize(
    "kind, kernel_size, overrides, message",
    [
        ("conv", 3, {"projector.kind": "mlp"},
         "the projector is iREPA's 'conv' kind, the config's 'mlp'; set config.projector.kind"),
        ("conv", 1, {"projector.kind": "conv"},
         r"kernel is 1x1, the config's 3x3; set config.projector.kernel_size=1"),
        ("mlp", 3, {"projector.kind": "conv"}, "set config.projector.kind='mlp'"),
    ],
)  # fmt: skip
def test_an_irepa_projector_of_another_kind_or_kernel_is_refused(
    kind, kernel_size, overrides, message
):
    contents = irepa_checkpoint(tiny_config(), kind, kernel_size)
    with pytest.raises(ValueError, match=message):
        denoiser_state(tiny_config(**overrides), contents, "irepa", "irepa.pt")


def test_irepas_linear_projector_is_refused(repa):
    config, _, _ = repa
    contents = irepa_checkpoint(config, "conv", 1)
    for entry in ("model", "ema"):
        weight = contents[entry][f"{IREPA}.weight"]
        contents[entry][f"{IREPA}.weight"] = weight[:, :, 0, 0]
    with pytest.raises(ValueError, match="iREPA's linear projector"):
        denoiser_state(tiny_config(**{"projector.kind": "conv"}), contents, "irepa", "irepa.pt")
