"""Published SiT, DiT, REPA and iREPA denoisers (PyTorch) -> the params of `models.sit.SiT`
and, for REPA and iREPA, of the projector (`models.projector`).

The three share DiT's module names: `x_embedder.proj` (the patch conv), `t_embedder.mlp.{0,2}`,
`y_embedder.embedding_table`, `blocks.{i}.{attn.qkv, attn.proj, mlp.fc1, mlp.fc2,
adaLN_modulation.1}`, `final_layer.{adaLN_modulation.1, linear}`, and `pos_embed`, the fixed
sin-cos table stored as a frozen parameter: SiT computes the same table itself, so the file's is
checked, not converted. REPA adds its projector MLP, `projectors.0.{0,2,4}`; iREPA wraps its
projector in a `projection_layer`: a Conv2d `projectors.0.projection_layer.{weight,bias}`
(weight (z_dim, hidden, k, k)) or the MLP `projectors.0.projection_layer.{0,2,4}`. What differs
is what the network means, named by the format:

- `repa`: REPA's interpolant runs from data (t = 0) to noise (t = 1) and the network predicts
  the velocity noise - data, as this package does: the weights move as they are.
- `irepa`: iREPA's ldm/train.py checkpoint: REPA's SiT, interpolant and checkpoint entries, its
  projector as `projector.kind` "conv" (or "mlp") of the config.
- `sit`: SiT's time runs the other way (t = 0 noise, t = 1 data, velocity data - noise), and its
  head keeps DiT's learned-sigma half, which SiT's forward discards. Converted exactly into this
  package's convention, v(x, t) = -v_SiT(x, 1 - t): the sinusoidal features of 1 - t are a fixed
  linear map of those of t, folded into the first timestep layer; the sign goes into the output
  layer; the unused half is dropped.
- `dit`: DiT's eps and variance values (`learn_sigma`), t the step 0..999, as here.
"""

import math
import re
from typing import Any

import ml_collections
import numpy as np

from sara_jax.converters import mapping
from sara_jax.converters.checkpoint import StateDict
from sara_jax.converters.mapping import Converter, PyTree
from sara_jax.models.sit import sincos_pos_embed_2d

FORMATS = ("repa", "irepa", "sit", "dit")
# Formats of a training run's checkpoint ({"model", "ema", "opt", "args", "steps"}) whose model
# has a projector.
RUN_FORMATS = ("repa", "irepa")
# Formats whose head predicts 2C channels (eps or velocity, then DiT's variance values).
LEARNED_SIGMA = ("sit", "dit")
# Our Dense modules of a block and their torch names.
BLOCK_LAYERS = (
    ("attn/qkv", "attn.qkv"),
    ("attn/proj", "attn.proj"),
    ("mlp/fc1", "mlp.fc1"),
    ("mlp/fc2", "mlp.fc2"),
    ("adaLN_modulation", "adaLN_modulation.1"),
)
# REPA's projector: Linear, SiLU, Linear, SiLU, Linear.
PROJECTOR_LAYERS = (("fc1", "0"), ("fc2", "2"), ("fc3", "4"))
# iREPA's projector module.
IREPA_PROJECTOR = "projectors.0.projection_layer"
# Tolerance of the pos_embed check: REPA's EMA also averages the frozen table, and rounding at
# every one of millions of updates moves it by a few 1e-6; a different table differs by O(1).
POS_EMBED_ATOL = 1e-3


def num_blocks(state_dict: StateDict) -> int:
    """The number of transformer blocks `blocks.{i}.*` in a state dict."""
    return len({m[1] for k in state_dict if (m := re.match(r"blocks\.(\d+)\.", k))})


def irepa_projector(state_dict: StateDict) -> tuple[str, int | None]:
    """The kind of an iREPA state dict's projector, "conv" (with its kernel side k), "mlp" or
    "linear" (its third kind, a single Linear), as (kind, k or None); ("", None) if none."""
    weight = state_dict.get(f"{IREPA_PROJECTOR}.weight")
    if weight is not None:
        return ("conv", weight.shape[-1]) if weight.ndim == 4 else ("linear", None)
    if f"{IREPA_PROJECTOR}.0.weight" in state_dict:
        return "mlp", None
    return "", None


def _check_irepa_projector(
    state_dict: StateDict, config: ml_collections.ConfigDict, z_dim: int, source: str
) -> list[tuple[str, int, int, str]]:
    """Refuses an iREPA projector of another kind or kernel than `config.projector`'s, naming
    the field; returns the shape checks of its tensors (as `check_architecture`'s)."""
    kind, kernel = irepa_projector(state_dict)
    p, z_field = config.projector, "encoder.name (the encoder's width)"
    if kind == "linear":
        raise ValueError(
            f"{source}: iREPA's linear projector ({IREPA_PROJECTOR}.weight is 2-D) has no "
            "sara_jax kind; config.projector.kind is 'mlp' or 'conv'"
        )
    if kind and kind != p.kind:
        raise ValueError(
            f"{source}: the projector is iREPA's {kind!r} kind, the config's {p.kind!r}; set "
            f"config.projector.kind={kind!r}"
        )
    if kind == "conv":
        if kernel != p.kernel_size:
            raise ValueError(
                f"{source}: the conv projector's kernel is {kernel}x{kernel}, the config's "
                f"{p.kernel_size}x{p.kernel_size}; set config.projector.kernel_size={kernel}"
            )
        return [(f"{IREPA_PROJECTOR}.weight", 0, z_dim, z_field)]
    return [
        (f"{IREPA_PROJECTOR}.0.weight", 0, p.width, "projector.width"),
        (f"{IREPA_PROJECTOR}.4.weight", 0, z_dim, z_field),
    ]


def check_architecture(
    state_dict: StateDict, config: ml_collections.ConfigDict, z_dim: int, fmt: str, source: str
) -> None:
    """Raises a ValueError naming the key, its shape, the shape the config implies and the config
    field to change, for the first dimension where the checkpoint and `config` disagree.

    The attention heads are not in the file (qkv is one matrix): `model.num_heads` is trusted.

    Args:
      state_dict: the denoiser's tensors in the torch layout.
      z_dim: the width of the config's encoder (the projector's output).
      fmt: one of FORMATS.
    """
    m = config.model
    data_derived = "(derived from config.data)"
    checks = [
        ("x_embedder.proj.weight", 0, m.hidden_size, "model.hidden_size"),
        ("x_embedder.proj.weight", 1, m.in_channels, f"model.in_channels {data_derived}"),
        ("x_embedder.proj.weight", 2, m.patch_size, "model.patch_size"),
        ("pos_embed", 1, (m.input_size // m.patch_size) ** 2, f"model.input_size {data_derived}"),
        # One more row than classes: the null class of classifier-free guidance.
        ("y_embedder.embedding_table.weight", 0, m.num_classes + 1, "model.num_classes"),
        ("blocks.0.mlp.fc1.weight", 0, int(m.hidden_size * m.mlp_ratio), "model.mlp_ratio"),
        (
            "final_layer.linear.weight",
            0,
            m.patch_size**2 * m.in_channels * (2 if fmt in LEARNED_SIGMA else 1),
            "model.family, or the format (the sit and dit releases predict 2C channels, REPA C),",
        ),
    ]
    if fmt == "repa":
        if config.projector.kind != "mlp":
            raise ValueError(
                f"{source}: REPA's projector is an MLP, the config's {config.projector.kind!r}; "
                "set config.projector.kind='mlp'"
            )
        checks += [
            ("projectors.0.0.weight", 0, config.projector.width, "projector.width"),
            ("projectors.0.4.weight", 0, z_dim, "encoder.name (the encoder's width)"),
        ]
    if fmt == "irepa":
        checks += _check_irepa_projector(state_dict, config, z_dim, source)
    if fmt in RUN_FORMATS and any(k.startswith("projectors.1.") for k in state_dict):
        raise ValueError(
            f"{source} aligns to several encoders (projectors.1.*); a SARA run trains one projector"
        )
    for key, axis, want, field in checks:
        if key not in state_dict:
            continue  # Reported by the conversion, which names every missing key.
        shape = state_dict[key].shape
        if shape[axis] != want:
            wanted = tuple(want if i == axis else n for i, n in enumerate(shape))
            raise ValueError(
                f"{source}: key {key!r} has shape {shape}, the config's model needs {wanted}; "
                f"change config.{field} to match the checkpoint"
            )
    depth = num_blocks(state_dict)
    if depth != m.depth:
        raise ValueError(
            f"{source}: {depth} blocks (blocks.0 to blocks.{depth - 1}), the config has "
            f"{m.depth}; change config.model.depth to match the checkpoint"
        )


def _reverse_time(weight: np.ndarray) -> np.ndarray:
    """The first timestep layer's weight (D, F) acting on features of t as the original acts on
    features of 1 - t.

    The features are [cos(f_k t), sin(f_k t)] with f_k = 10000^(-k / (F/2)); per frequency,
    cos(f(1 - t)) = cos f cos(ft) + sin f sin(ft) and sin(f(1 - t)) = sin f cos(ft) - cos f
    sin(ft), a fixed 2 x 2 map of the features of t.
    """
    half = weight.shape[1] // 2
    freqs = np.exp(-math.log(10000.0) * np.arange(half, dtype=np.float64) / half)
    cos, sin = np.cos(freqs), np.sin(freqs)
    w_cos, w_sin = weight[:, :half].astype(np.float64), weight[:, half:].astype(np.float64)
    return np.concatenate([w_cos * cos + w_sin * sin, w_cos * sin - w_sin * cos], axis=1)


def _velocity_rows(value: np.ndarray, patch: int, channels: int) -> np.ndarray:
    """SiT's output layer (weight (p*p*2C, D) or bias (p*p*2C,)) -> its velocity rows, negated.

    A token's outputs are (p, p, 2C) with channels fastest; SiT keeps the first C.
    """
    rows = value.reshape(patch * patch, 2 * channels, *value.shape[1:])[:, :channels]
    return -rows.reshape(patch * patch * channels, *value.shape[1:])


def _dense(conv: Converter, path: str, module: str) -> None:
    conv.move(f"{path}/kernel", f"{module}.weight")
    conv.move(f"{path}/bias", f"{module}.bias")


def _move_sit(conv: Converter, expected: PyTree, fmt: str) -> None:
    patch, _, channels, _ = expected["x_embedder"]["kernel"].shape
    conv.put(
        "sit/x_embedder/kernel",
        mapping.conv(conv.take("x_embedder.proj.weight")),
        "x_embedder.proj.weight",
    )
    conv.move("sit/x_embedder/bias", "x_embedder.proj.bias")
    conv.move("sit/y_embedder/embedding", "y_embedder.embedding_table.weight")
    if fmt == "sit":
        key = "t_embedder.mlp.0.weight"
        conv.put("sit/t_embedder/fc1/kernel", mapping.linear(_reverse_time(conv.take(key))), key)
        conv.move("sit/t_embedder/fc1/bias", "t_embedder.mlp.0.bias")
    else:
        _dense(conv, "sit/t_embedder/fc1", "t_embedder.mlp.0")
    _dense(conv, "sit/t_embedder/fc2", "t_embedder.mlp.2")
    depth = sum(1 for name in expected if name.startswith("blocks_"))
    for i in range(depth):
        for ours, theirs in BLOCK_LAYERS:
            _dense(conv, f"sit/blocks_{i}/{ours}", f"blocks.{i}.{theirs}")
    _dense(conv, "sit/final_layer/adaLN_modulation", "final_layer.adaLN_modulation.1")
    if fmt == "sit":
        for leaf, suffix in (("kernel", "weight"), ("bias", "bias")):
            key = f"final_layer.linear.{suffix}"
            rows = _velocity_rows(conv.take(key), patch, channels)
            value = mapping.linear(rows) if leaf == "kernel" else rows
            conv.put(f"sit/final_layer/linear/{leaf}", value, key)
    else:
        _dense(conv, "sit/final_layer/linear", "final_layer.linear")


def _check_pos_embed(conv: Converter, hidden_size: int) -> None:
    table = conv.take("pos_embed")
    tokens = table.shape[1]
    grid = math.isqrt(tokens)
    ours = sincos_pos_embed_2d(hidden_size, grid)
    if grid * grid != tokens or not np.allclose(table[0], ours, atol=POS_EMBED_ATOL):
        raise ValueError(
            f"checkpoint {conv.source} key 'pos_embed' is not the fixed 2D sin-cos table that "
            "SiT computes (the network would see different positions)"
        )


def convert(state_dict: StateDict, expected: PyTree, fmt: str, source: str) -> PyTree:
    """The checkpoint's tensors as {"sit": ...} and, when `expected` has one, "projector".

    Every tensor lands in exactly one param and every param is filled, or an error names the
    tensor or param; `pos_embed`, where present, is checked against SiT's own table. The same
    call converts AdamW's moments of a REPA run, which are keyed like the params (without the
    frozen `pos_embed`).

    Args:
      state_dict: tensors in the torch layout of `fmt`.
      expected: {"sit": ..., ["projector": ...]}, arrays or ShapeDtypeStructs, for the shapes.
      fmt: one of FORMATS.
      source: names the checkpoint in errors.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown denoiser format {fmt!r}; expected one of {FORMATS}")
    conv = Converter(state_dict, source)
    if conv.has("pos_embed"):
        _check_pos_embed(conv, expected["sit"]["x_embedder"]["bias"].shape[0])
    _move_sit(conv, expected["sit"], fmt)
    if "projector" in expected:
        _move_projector(conv, expected["projector"], fmt)
    return conv.finish(expected)


def _move_projector(conv: Converter, expected: PyTree, fmt: str) -> None:
    """REPA's or iREPA's projector onto ours: the MLP's three Linears, or iREPA's Conv2d (weight
    (z_dim, hidden, k, k) -> kernel (k, k, hidden, z_dim))."""
    module = IREPA_PROJECTOR if fmt == "irepa" else "projectors.0"
    if "conv" in expected:
        key = f"{module}.weight"
        conv.put("projector/conv/kernel", mapping.conv(conv.take(key)), key)
        conv.move("projector/conv/bias", f"{module}.bias")
        return
    for ours, theirs in PROJECTOR_LAYERS:
        _dense(conv, f"projector/{ours}", f"{module}.{theirs}")


def adamw_moments(
    opt: dict[str, Any], names: list[str], source: str
) -> tuple[StateDict, StateDict, int]:
    """torch AdamW's state_dict as ({name: exp_avg}, {name: exp_avg_sq}, step count).

    torch numbers the optimizer's params in the order they were given to it, REPA's
    `model.parameters()`; that is the order of the `model` state dict, all of whose entries are
    parameters in REPA's SiT. Params that never had a gradient (the frozen `pos_embed`) have no
    state.

    Args:
      opt: the loaded `optimizer.state_dict()` ("state", "param_groups").
      names: the param names in `model.parameters()` order.
    """
    indices = [i for group in opt["param_groups"] for i in group["params"]]
    if len(indices) != len(names):
        raise ValueError(
            f"{source}: the optimizer holds {len(indices)} params, the model state dict "
            f"{len(names)}; is 'opt' the optimizer of 'model'?"
        )
    exp_avg, exp_avg_sq, steps = {}, {}, set()
    for index, name in zip(indices, names, strict=True):
        state = opt["state"].get(index)
        if state is None:
            continue
        extra = sorted(set(state) - {"step", "exp_avg", "exp_avg_sq"})
        if extra:
            raise ValueError(
                f"{source}: optimizer state of {name!r} holds {extra}; only AdamW without "
                "amsgrad converts to optax.adamw"
            )
        exp_avg[name], exp_avg_sq[name] = state["exp_avg"], state["exp_avg_sq"]
        steps.add(int(state["step"]))
    if len(steps) != 1:
        raise ValueError(
            f"{source}: expected one AdamW step count over the params, found {sorted(steps)}"
        )
    return exp_avg, exp_avg_sq, steps.pop()
