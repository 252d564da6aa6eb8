"""diffusers AutoencoderKL checkpoints (`stabilityai/sd-vae-ft-mse`, `stabilityai/sd-vae-ft-ema`)
-> `AutoencoderKL` params.

The Flax module carries diffusers' names ("." -> "_"), so the mapping is a rename plus the
layout changes: conv kernels OIHW -> HWIO, Linear weights transposed, GroupNorm weight -> scale.
The mid-block attention exists under two on-disk namings: `to_q`, `to_k`, `to_v`, `to_out.0`
(what diffusers writes today) and `query`, `key`, `value`, `proj_attn` (checkpoints saved before
diffusers 0.14, which diffusers still renames on load); both are read, and a projection stored
as a 1x1 conv weight (O, I, 1, 1) is squeezed to a Linear one.

The original CompVis/ldm layout (`encoder.down.0.block.0...`, `first_stage_model.` prefix, as in
`vae-ft-mse-840000-ema-pruned.safetensors`) is not read: use the diffusers-format repository.
"""

import json
import os
import re
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
from flax import traverse_util

from sara_jax.converters.checkpoint import StateDict, is_hub_name, read_state_dict, resolve
from sara_jax.converters.mapping import Converter, conv, linear
from sara_jax.models.vae import AutoencoderKL

PyTree = Any

# Flax attention leaf module -> the pre-0.14 diffusers name of the same Linear.
LEGACY_ATTENTION = {"to_q": "query", "to_k": "key", "to_v": "value", "to_out.0": "proj_attn"}

# Stable Diffusion's VAE (every sd-vae-* checkpoint): used when only a weight file is given.
SD_CONFIG = {
    "block_out_channels": (128, 256, 512, 512),
    "layers_per_block": 2,
    "latent_channels": 4,
    "norm_num_groups": 32,
}

# config.json entries the Flax module does not model, with the only values it implements.
FIXED_CONFIG = {
    "in_channels": 3,
    "out_channels": 3,
    "act_fn": "silu",
    "use_quant_conv": True,
    "use_post_quant_conv": True,
    "mid_block_add_attention": True,
}


def _torch_key(path: str) -> str:
    """Flax path -> checkpoint key: 'encoder/down_blocks_0/resnets_1/conv1/kernel' ->
    'encoder.down_blocks.0.resnets.1.conv1.weight' (leaf kernel/scale -> weight)."""
    *modules, leaf = path.split("/")
    modules = [re.sub(r"_(\d+)$", r".\1", m) for m in modules]
    return ".".join([*modules, "bias" if leaf == "bias" else "weight"])


def _attention_key(c: Converter, key: str) -> str:
    """`key`, or its legacy attention name when only that is in the checkpoint."""
    match = re.fullmatch(r"(.*\.attentions\.\d+)\.(to_q|to_k|to_v|to_out\.0)\.(weight|bias)", key)
    if match is None or c.has(key):
        return key
    prefix, name, leaf = match.groups()
    legacy = f"{prefix}.{LEGACY_ATTENTION[name]}.{leaf}"
    return legacy if c.has(legacy) else key


def _check_layout(state_dict: StateDict, source: str) -> None:
    if "encoder.conv_in.weight" in state_dict:
        return
    if any(
        k.startswith(("first_stage_model.", "encoder.down.", "decoder.up.")) for k in state_dict
    ):
        raise ValueError(
            f"{source}: an original CompVis/ldm VAE checkpoint (keys 'encoder.down.*' or "
            "'first_stage_model.*'); use the diffusers-format release instead, e.g. the hub "
            "repository stabilityai/sd-vae-ft-mse or stabilityai/sd-vae-ft-ema"
        )
    raise ValueError(
        f"{source}: not a diffusers AutoencoderKL checkpoint (no key 'encoder.conv_in.weight')"
    )


def from_diffusers(state_dict: StateDict, source: str, expected: PyTree) -> PyTree:
    """Converts a diffusers AutoencoderKL state dict (on-disk naming, either attention naming).

    Args:
      state_dict: {name: array} as read from the checkpoint.
      source: where it came from, for error messages.
      expected: the target `AutoencoderKL` param tree (arrays or ShapeDtypeStructs).
    Raises: KeyError / ValueError naming the checkpoint key that is missing, left over or of
      the wrong shape.
    """
    _check_layout(state_dict, source)
    c = Converter(state_dict, source)
    for path, want in traverse_util.flatten_dict(expected, sep="/").items():
        key = _attention_key(c, _torch_key(path))
        value = c.take(key)
        if path.endswith("/kernel"):
            dense = len(want.shape) == 2
            if dense and value.ndim == 4 and value.shape[2:] == (1, 1):
                value = value[:, :, 0, 0]  # a 1x1 conv projection is a Linear
            if value.ndim != len(want.shape):
                raise ValueError(
                    f"checkpoint {source} key {key!r} has shape {value.shape}; expected a "
                    f"{'Linear' if dense else 'Conv2d'} weight for {path} "
                    f"({len(want.shape)} dims)"
                )
            value = linear(value) if dense else conv(value)
        c.put(path, value, key)
    return c.finish(expected)


def expected_params(module: AutoencoderKL) -> PyTree:
    """The module's param shapes (no compute, no memory)."""
    side = module.downsample_factor
    images = jax.ShapeDtypeStruct((1, side, side, 3), jnp.float32)
    return jax.eval_shape(module.init, jax.random.key(0), images)["params"]


def module_from_config(config: dict, where: str, dtype: jnp.dtype = jnp.float32) -> AutoencoderKL:
    """The `AutoencoderKL` a diffusers config.json (read from `where`) describes.

    Raises: ValueError naming `where` and the entry when the config is not an architecture
      this module implements.
    """
    problems = []
    name = config.get("_class_name", "AutoencoderKL")
    if name != "AutoencoderKL":
        problems.append(f"_class_name={name!r} (expected 'AutoencoderKL')")
    for entry, value in FIXED_CONFIG.items():
        if config.get(entry, value) != value:
            problems.append(f"{entry}={config[entry]!r} (only {value!r} is implemented)")
    channels = tuple(config.get("block_out_channels", (64,)))
    for entry, block in (
        ("down_block_types", "DownEncoderBlock2D"),
        ("up_block_types", "UpDecoderBlock2D"),
    ):
        types = tuple(config.get(entry, (block,) * len(channels)))
        if types != (block,) * len(channels):
            problems.append(
                f"{entry}={list(types)} (expected {len(channels)} x {block!r}, one per "
                "block_out_channels entry)"
            )
    if problems:
        raise ValueError(f"{where}: unsupported AutoencoderKL config: {'; '.join(problems)}")
    # diffusers' own defaults for entries a config leaves out.
    return AutoencoderKL(
        block_out_channels=channels,
        layers_per_block=int(config.get("layers_per_block", 1)),
        latent_channels=int(config.get("latent_channels", 4)),
        norm_num_groups=int(config.get("norm_num_groups", 32)),
        dtype=dtype,
    )


def _read_config(source: str, field: str) -> tuple[dict, str]:
    """(config, where it was read) for `source`, which `resolve` has accepted: SD_CONFIG when
    it is a weight file."""
    path = Path(os.path.expanduser(source))
    if path.is_file():
        return SD_CONFIG, f"{field}={source!r} (a weight file: Stable Diffusion's VAE config)"
    if path.is_dir():
        config_path = path / "config.json"
        if not config_path.is_file():
            raise FileNotFoundError(
                f"{field}={source!r}: directory {path.resolve()} has no config.json; add the "
                "checkpoint's config.json, or name the weight file itself to use Stable "
                "Diffusion's VAE config"
            )
    else:
        assert is_hub_name(source), source
        import huggingface_hub

        try:
            config_path = Path(huggingface_hub.hf_hub_download(source, "config.json"))
        except Exception as e:  # noqa: BLE001 -- offline, unknown repo, auth: reported alike
            raise FileNotFoundError(
                f"{field}={source!r}: could not get config.json of the Hugging Face hub "
                f"repository ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); "
                f"on a machine with internet run `hf download {source} --local-dir DIR` and "
                f"set {field}=DIR"
            ) from e
    try:
        config = json.loads(config_path.read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"{field}={source!r}: cannot read {config_path}: {e}") from e
    return config, f"{field}={source!r} ({config_path})"


def load_vae(
    source: str, field: str, dtype: jnp.dtype = jnp.float32
) -> tuple[AutoencoderKL, PyTree]:
    """An `AutoencoderKL` and its params from a published diffusers checkpoint.

    Args:
      source: a hub id ('stabilityai/sd-vae-ft-mse'), a directory with config.json and
        diffusion_pytorch_model.safetensors (or .bin), or a weight file (then Stable Diffusion's
        VAE config is assumed).
      field: the config field `source` came from, for error messages.
      dtype: the module's compute dtype.
    Returns: (module, params), params a nested dict of float32 jax arrays.
    """
    weights = resolve(source, field)  # first: its errors cover a source that names nothing
    config, where = _read_config(source, field)
    module = module_from_config(config, where, dtype)
    state_dict = read_state_dict(weights)
    params = from_diffusers(state_dict, f"{field}={source!r} ({weights})", expected_params(module))
    return module, jax.tree.map(jnp.asarray, params)
