"""The run configuration: the defaults every config file starts from, and their validation.

`base_config()` holds every field with the paper's values (SiT-XL/2 ImageNet-256); the files in
`configs/` change what differs. Each section's defaults are followed by its rules
(`sections.py`): a table of per-field ranges and, where its fields constrain each other, a
check. `validate` applies them, then the rules across sections, before anything is built or
compiled, and names the offending field in its error. The rules are plain tables, not a schema
library such as pydantic, because the fields already live in a ConfigDict that config_flags
overrides from the command line: a schema would declare every field a second time.

`model.input_size`, `model.in_channels` and `model.num_classes` are derived from `data`: they
are computed whenever read, so a config file (or `--config.data.space=pixel`) sets only the data
fields. A config may still assign them; `validate` then checks they agree with the data.
"""

from typing import Any, NamedTuple

import ml_collections

from sara_jax.config import sections
from sara_jax.config.rules import check, check_name, closest, flat_items
from sara_jax.config.sections import DTYPES, FAMILIES, base_config
from sara_jax.encoders import registry
from sara_jax.io.errors import InputError

__all__ = [
    "DTYPES",
    "FAMILIES",
    "METHODS",
    "Method",
    "base_config",
    "describe",
    "flat_items",
    "known_method",
    "method_terms",
    "paper_config",
    "set_alignment",
    "set_fields",
    "sit_preset",
    "validate",
]


def validate(c: ml_collections.ConfigDict, num_devices: int | None = None) -> None:
    """Checks fields, types, ranges and cross-field rules; raises InputError naming the field.

    Args:
      c: the run's config.
      num_devices: devices of the data-parallel mesh, to check the batch divides over them.
    """
    schema = dict(flat_items(base_config()))
    fields = dict(flat_items(c))
    for name in fields.keys() - schema.keys():
        close = ", ".join(closest(name, list(schema))) or "none"
        expected = f"(misspelt, or not used by sara_jax); closest: {close}"
        raise InputError(f"config.{name} is not a known field {expected}")
    for name in schema.keys() - fields.keys():
        raise InputError(f"config.{name} is missing (every field of base_config() is required)")
    for name, default in schema.items():
        value = fields[name]
        if isinstance(default, bool) or not isinstance(default, int | float):
            ok = type(value) is type(default)
        else:  # Numbers: an int may stand for a float, never the other way round.
            ok = not isinstance(value, bool) and isinstance(value, int | float)
            ok = ok and (isinstance(default, float) or isinstance(value, int))
        check(c, name, ok, f"of type {type(default).__name__}")
    sections.check_sections(c)
    _check_sampler(c)
    _check_tokens(c)
    if num_devices is not None:
        accum = c.train.grad_accum_steps
        expected = f"divisible by the number of devices ({num_devices}) x "
        expected += f"train.grad_accum_steps ({accum})"
        ok = c.data.global_batch_size % (num_devices * accum) == 0
        check(c, "data.global_batch_size", ok, expected)


def _check_sampler(c: ml_collections.ConfigDict) -> None:
    """Each objective has its own samplers: the SiT's integrate a velocity, DDPM needs eps and
    the learned variance (and takes at most diffusion.num_timesteps steps, without interval)."""
    # Imported here, not above, so that loading a config file needs no jax.
    from sara_jax.sampling import ddpm, samplers

    s, steps = c.sample, c.diffusion.num_timesteps
    (samplers if c.model.family == "sit" else ddpm).check_method(s.method, "sample.method")
    expected = f"<= model.in_channels={c.model.in_channels}"
    check(c, "sample.ddpm_cfg_channels", s.ddpm_cfg_channels <= c.model.in_channels, expected)
    if s.method == "ddpm":
        expected = f"in [2, diffusion.num_timesteps={steps}] for the DDPM sampler"
        check(c, "sample.num_steps", 2 <= s.num_steps <= steps, expected)
        check(c, "eval.num_steps", 2 <= c.eval.num_steps <= steps, expected)
        no_interval = (s.guidance_low, s.guidance_high) == (0.0, 1.0)
        expected = "0.0 with sample.guidance_high 1.0 for the DDPM sampler"
        check(c, "sample.guidance_low", no_interval, expected + " (DiT's CFG has no interval)")


def _check_tokens(c: ml_collections.ConfigDict) -> None:
    """The encoder's tokens are the SiT's targets, one per SiT token."""
    e, m, spec = c.encoder, c.model, registry.encoder_spec(c.encoder.name)
    demo = spec.family == "demo_vit"
    if demo:  # It reads the training images as they are (no resize).
        expected = f"equal to data.image_size={c.data.image_size} for the demo_vit encoder"
        check(c, "encoder.image_size", e.image_size == c.data.image_size, expected)
    patch = e.arch.patch_size if demo else spec.patch_size
    expected = f"divisible by the encoder's patch size {patch}"
    check(c, "encoder.image_size", e.image_size % patch == 0, expected)
    enc_tokens = (e.image_size // patch) ** 2
    sit_tokens = (m.input_size // m.patch_size) ** 2
    expected = f"such that the encoder has as many tokens as the SiT ({sit_tokens}), "
    field = "encoder.arch.patch_size" if demo else "encoder.image_size"
    check(c, field, enc_tokens == sit_tokens, expected + f"not {enc_tokens}")


def sit_preset(config: ml_collections.ConfigDict, size: str, patch_size: int = 2) -> None:
    """Sets the SiT shape fields to a published preset: S, B, L or XL, patch 2, 4 or 8."""
    from sara_jax.models.sit import PRESETS  # Here, so that loading a config needs no flax.

    config.model.depth, config.model.hidden_size, config.model.num_heads = PRESETS[size]
    config.model.patch_size = patch_size


def paper_config(
    size: str, encoder_depth: int, num_steps: int, terms: str
) -> ml_collections.ConfigDict:
    """A paper run: base_config() with a SiT preset (patch 2), its alignment depth, its length
    and its alignment terms or method (see `set_alignment`)."""
    config = base_config()
    sit_preset(config, size)
    config.model.encoder_depth = encoder_depth
    config.train.num_steps = num_steps
    set_alignment(config, terms)
    return config


class Method(NamedTuple):
    """A method of the comparisons: alignment terms at the paper's weights (`set_alignment`),
    then the config fields it sets beyond them (dotted name -> value)."""

    terms: str
    fields: dict[str, Any]


# REPA's projection (SARA's too): the per-token MLP on the raw encoder tokens.
REPA_PROJECTION = {"projector.kind": "mlp", "loss.encoder_norm": "none"}
# iREPA's two changes to REPA (Singh et al. 2025, arXiv 2512.10794): a 3x3 conv projector and
# the encoder tokens z-scored over the token axis (alpha 0.6, its ldm trainer's default), the
# normalised tokens handed to every alignment term as its trainer does.
IREPA_PROJECTION = {
    "projector.kind": "conv",
    "projector.kernel_size": 3,
    "loss.encoder_norm": "zscore",
    "loss.zscore_alpha": 0.6,
    "loss.encoder_norm_terms": "all",
}

# The methods compared: the paper's three, iREPA (L_patch at 1.0, its ldm config's proj_coeff,
# where REPA's is 0.5) and SARA's terms at SARA's weights with iREPA's two changes. Each sets
# the projection fields too, so that a method means the same from any base config.
METHODS = {
    "sara": Method("patch,struc,adv", REPA_PROJECTION),
    "repa": Method("patch", REPA_PROJECTION),
    "none": Method("none", REPA_PROJECTION),
    "irepa": Method("patch", {**IREPA_PROJECTION, "loss.patch_weight": 1.0}),
    "sara_irepa": Method("patch,struc,adv", IREPA_PROJECTION),
}


def known_method(method: str) -> str:
    """`method` if it is a key of METHODS, else an InputError naming the choices (what a
    config's `:method` gets); `paper_config` and `set_alignment` take the name."""
    if method not in METHODS:
        raise InputError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
    return method


def method_terms(method: str) -> str:
    """The alignment terms of METHODS[method] alone, without its other fields (an InputError
    naming the choices for an unknown method)."""
    return METHODS[known_method(method)].terms


def set_alignment(config: ml_collections.ConfigDict, terms: str) -> None:
    """Switches alignment terms on at the paper's weights and the others off.

    Args:
      terms: a key of METHODS (its terms, then its fields), or comma-separated subset of
        "patch", "struc", "adv" (lambda 0.5, beta 0.5, gamma 0.05), or "none" for a plain SiT;
        "patch" alone is REPA. A subset leaves every other field as it is.
    """
    method = METHODS.get(terms)
    if method is not None:
        terms = method.terms
    chosen = set() if terms == "none" else set(terms.split(","))
    weights = {"patch": 0.5, "struc": 0.5, "adv": 0.05}
    if unknown := chosen - weights.keys():
        raise InputError(
            f"unknown alignment terms {sorted(unknown)}; choose from {list(weights)} "
            f"(or a method: {', '.join(METHODS)})"
        )
    config.loss.patch_weight = weights["patch"] if "patch" in chosen else 0.0
    config.loss.struc_weight = weights["struc"] if "struc" in chosen else 0.0
    config.loss.adv_weight = weights["adv"] if "adv" in chosen else 0.0
    if method is not None:
        set_fields(config, method.fields)


def set_fields(config: ml_collections.ConfigDict, fields: dict[str, Any]) -> None:
    """Sets each dotted field of `fields` in `config`; an InputError names one it lacks."""
    for name, value in fields.items():
        check_name(config, name)
        *sections_, field = name.split(".")
        node = config
        for section in sections_:
            node = node[section]
        node[field] = value


def describe(c: ml_collections.ConfigDict) -> str:
    """The fields where `c` differs from base_config(), one line per section: what a config
    file and its command-line overrides changed, short enough to read at a run's start."""
    defaults = dict(flat_items(base_config()))
    changed: dict[str, list[str]] = {}
    for name, value in flat_items(c):
        if name not in defaults or defaults[name] != value:
            section, _, field = name.partition(".")
            changed.setdefault(section, []).append(f"{field}={value!r}")
    if not changed:
        return "the defaults (sara_jax/config/sections.py)"
    lines = [f"  {section}: {' '.join(fields)}" for section, fields in changed.items()]
    count = sum(len(fields) for fields in changed.values())
    return f"the defaults but {count} field(s):\n" + "\n".join(lines)
