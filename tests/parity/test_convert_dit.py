"""DiT's released layout -> our SiT(learn_sigma=True), against diffusers' DiT.

The reference is diffusers' DiTTransformer2DModel with random weights. Its checkpoint in DiT's
own layout is built by undoing the renaming of diffusers' scripts/convert_dit_to_diffusers.py
(the reverse is this file's own code). diffusers' port differs from DiT's models.py in two
constants, set back to DiT's here: its timestep frequencies are 10000^(-k / (F/2 - 1)) where
DiT's are 10000^(-k / (F/2)) (`downscale_freq_shift`), and its pre-MLP LayerNorm epsilon
defaults to 1e-5 where DiT's is 1e-6.
"""

import jax
import numpy as np
import pytest
from helpers import tiny_config

from sara_jax.encoders.registry import encoder_width
from sara_jax.training.converted import denoiser_state
from sara_jax.training.state import build_models

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")

# diffusers' names for the modules of DiT's block i, by DiT's names.
BLOCK = {
    "attn.proj": "attn1.to_out.0",
    "mlp.fc1": "ff.net.0.proj",
    "mlp.fc2": "ff.net.2",
    "adaLN_modulation.1": "norm1.linear",
}


def dit_config():
    """The tiny demo run as a DiT: 32x32x3 pixels, patch 4, 2 blocks of width 32."""
    return tiny_config(**{"model.family": "dit", "sample.method": "ddpm"})


def diffusers_dit(config):
    """A random-weight diffusers DiT of config's shape with DiT's constants, in eval mode."""
    m = config.model
    torch.manual_seed(0)
    model = diffusers.DiTTransformer2DModel(
        num_attention_heads=m.num_heads,
        attention_head_dim=m.hidden_size // m.num_heads,
        in_channels=m.in_channels,
        out_channels=2 * m.in_channels,
        num_layers=m.depth,
        sample_size=m.input_size,
        patch_size=m.patch_size,
        num_embeds_ada_norm=m.num_classes,
        norm_eps=1e-6,
    ).eval()
    # DiT has one timestep and label embedder; diffusers gives each block a copy (the script
    # writes the same weights into all of them), so every block shares block 0's here.
    shared = model.transformer_blocks[0].norm1.emb
    shared.time_proj.downscale_freq_shift = 0
    for block in model.transformer_blocks[1:]:
        block.norm1.emb = shared
    with torch.no_grad():
        for param in model.parameters():  # Its zero-initialised layers made non-trivial.
            param.normal_(0.0, 0.1)
    return model


def dit_state_dict(model) -> dict[str, np.ndarray]:
    """diffusers' weights in DiT's released layout; every diffusers tensor is used."""
    theirs = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    used = set()

    def take(key):
        used.add(key)
        return theirs[key]

    emb = "transformer_blocks.0.norm1.emb"
    out = {
        "x_embedder.proj.weight": take("pos_embed.proj.weight"),
        "x_embedder.proj.bias": take("pos_embed.proj.bias"),
        # A buffer diffusers does not save: its own sin-cos table.
        "pos_embed": model.pos_embed.pos_embed.numpy(),
        "y_embedder.embedding_table.weight": take(f"{emb}.class_embedder.embedding_table.weight"),
    }
    for ours, diff in (("mlp.0", "linear_1"), ("mlp.2", "linear_2")):
        for leaf in ("weight", "bias"):
            out[f"t_embedder.{ours}.{leaf}"] = take(f"{emb}.timestep_embedder.{diff}.{leaf}")
    for i in range(len(model.transformer_blocks)):
        block = f"transformer_blocks.{i}"
        for leaf in ("weight", "bias"):
            qkv = [take(f"{block}.attn1.to_{n}.{leaf}") for n in "qkv"]
            out[f"blocks.{i}.attn.qkv.{leaf}"] = np.concatenate(qkv, axis=0)
            for ours, diff in BLOCK.items():
                out[f"blocks.{i}.{ours}.{leaf}"] = take(f"{block}.{diff}.{leaf}")
    for leaf in ("weight", "bias"):
        out[f"final_layer.adaLN_modulation.1.{leaf}"] = take(f"proj_out_1.{leaf}")
        out[f"final_layer.linear.{leaf}"] = take(f"proj_out_2.{leaf}")
    # The shared embedder appears under every block's name in the state dict.
    copies = {k for k in theirs if ".norm1.emb." in k and not k.startswith(f"{emb}.")}
    assert set(theirs) - used == copies
    return out


def test_converted_dit_matches_diffusers_on_the_same_inputs():
    config = dit_config()
    m = config.model
    model = diffusers_dit(config)
    state = denoiser_state(config, dit_state_dict(model), "dit", "DiT (from diffusers)")

    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, m.in_channels, m.input_size, m.input_size)).astype(np.float32)
    steps = np.array([0, 17, 500, 999])  # DiT's diffusion steps, fed to both as they are.
    labels = np.array([0, 4, 9, m.num_classes])  # The last is the null class.
    with torch.no_grad():
        want = model(
            torch.from_numpy(x),
            timestep=torch.from_numpy(steps),
            class_labels=torch.from_numpy(labels),
        ).sample.numpy()
    sit = build_models(config, encoder_width(config.encoder)).sit
    for params in (state.params, state.ema_params):
        got, _ = sit.apply(
            {"params": params["sit"]},
            x.transpose(0, 2, 3, 1),
            jax.numpy.asarray(steps, jax.numpy.float32),
            jax.numpy.asarray(labels, jax.numpy.int32),
        )
        # Channels: eps, then the variance values, as DiT's 2C output (NCHW there).
        assert got.shape[-1] == 2 * m.in_channels
        np.testing.assert_allclose(np.asarray(got), want.transpose(0, 2, 3, 1), atol=2e-5)
