"""The run configuration: the shared defaults every config file starts from, and validation.

Defaults are the paper's SiT-XL/2 ImageNet-256 run (Table 4, REPA's protocol); the files in
`configs/` change what differs. `validate` runs before anything is built or compiled and names
the offending field in its error.
"""

from collections.abc import Iterator
from typing import Any

import ml_collections

from sara_jax import sampling
from sara_jax.encoder_registry import ENCODERS
from sara_jax.models.sit import PRESETS

DTYPES = ("float32", "bfloat16")


def base_config() -> ml_collections.ConfigDict:
    """Every field a run reads, with the paper's values (SiT-XL/2, DINOv2-B, ImageNet-256)."""
    c = ml_collections.ConfigDict()
    c.seed = 0

    c.model = ml_collections.ConfigDict()
    c.model.input_size = 32  # SD-VAE latents of 256x256 images.
    c.model.in_channels = 4
    c.model.patch_size = 2
    c.model.depth = 28
    c.model.hidden_size = 1152
    c.model.num_heads = 16
    c.model.mlp_ratio = 4.0
    c.model.num_classes = 1000
    c.model.encoder_depth = 8  # Block whose output is aligned (1-based).
    c.model.class_dropout = 0.1
    c.model.compute_dtype = "bfloat16"
    c.model.remat = False  # Recompute each SiT block in the backward pass (saves memory).

    c.projector = ml_collections.ConfigDict()
    c.projector.width = 2048

    c.encoder = ml_collections.ConfigDict()
    c.encoder.name = "dinov2_vitb14"  # A key of encoder_registry.ENCODERS.
    # A Hugging Face hub id, a local directory / .safetensors / .pth file, or a directory of
    # params written by `python -m sara_jax.convert` (unused by "demo_vit").
    c.encoder.checkpoint = "facebook/dinov2-base"
    c.encoder.image_size = 224  # REPA resizes the 256-px images to 224: 16 x 16 patches of 14.
    c.encoder.compute_dtype = "bfloat16"
    # Architecture and pretraining of the "demo_vit" encoder (unused by the others).
    c.encoder.arch = ml_collections.ConfigDict()
    c.encoder.arch.patch_size = 14
    c.encoder.arch.embed_dim = 768
    c.encoder.arch.depth = 12
    c.encoder.arch.num_heads = 12
    c.encoder.arch.num_register_tokens = 0
    c.encoder.pretrain = ml_collections.ConfigDict()
    c.encoder.pretrain.steps = 300
    c.encoder.pretrain.batch_size = 128
    c.encoder.pretrain.lr = 1e-3
    c.encoder.pretrain.num_examples = 4096
    c.encoder.pretrain.cache_dir = "~/.cache/sara_jax"

    c.loss = ml_collections.ConfigDict()
    c.loss.patch_weight = 0.5  # lambda
    c.loss.struc_weight = 0.5  # beta
    c.loss.adv_weight = 0.05  # gamma
    c.loss.struc_reduction = "mean"  # "mean" over the N^2 entries or "sum" (Eq. 8 as written).
    c.loss.adv_warmup_steps = 0  # Generator steps with gamma = 0 before L_adv switches on.

    c.disc = ml_collections.ConfigDict()
    c.disc.every = 5  # D is updated on steps with step % every == 0.
    c.disc.use_maxpool = False
    c.disc.bn_mode = "frozen"  # "frozen": running statistics; "train": batch statistics.
    # ImageNet ResNet-18 weights for bn1, layer1, layer2 ("" = random init): a hub id or path,
    # torchvision naming (timm/resnet18.tv_in1k holds torchvision's weights) or transformers'.
    c.disc.checkpoint = "timm/resnet18.tv_in1k"
    c.disc.optim = _adamw_config()

    c.optim = _adamw_config()

    c.data = ml_collections.ConfigDict()
    c.data.source = "records"  # "records": `python -m sara_jax.preprocess` output; "shapes".
    c.data.space = "latent"  # "latent": SD-VAE latents; "pixel": images in [-1, 1].
    c.data.dir = ""  # The records directory (preprocess writes it, training reads it).
    c.data.image_size = 256
    c.data.num_classes = 1000
    c.data.num_examples = 1_281_167
    c.data.seed = 0
    c.data.global_batch_size = 256
    c.data.num_workers = 8
    c.data.latent_scale = 0.18215

    c.vae = ml_collections.ConfigDict()
    c.vae.checkpoint = "stabilityai/sd-vae-ft-mse"  # Encodes the training latents.
    c.vae.decode_checkpoint = "stabilityai/sd-vae-ft-ema"  # Decodes samples (REPA's choice).
    c.vae.compute_dtype = "float32"

    # `python -m sara_jax.preprocess`: raw ImageNet -> ADM crop -> VAE -> records in data.dir.
    c.preprocess = ml_collections.ConfigDict()
    # "folder": <path>/<class>/<image>; "tfds": imagenet2012 in TFDS data_dir <path>.
    c.preprocess.source = "folder"
    c.preprocess.path = ""  # The image folder, or the TFDS data_dir.
    c.preprocess.split = "train"
    c.preprocess.num_shards = 1024
    c.preprocess.batch_size = 256  # Images encoded at once by each process.
    c.preprocess.num_threads = 16  # Threads decoding and cropping images.
    c.preprocess.image_codec = "png"  # "png" (lossless, ~2x smaller) or "raw" uint8.

    c.train = ml_collections.ConfigDict()
    c.train.num_steps = 400_000
    c.train.ema_decay = 0.9999
    c.train.grad_accum_steps = 1  # Micro-batches per step; the global batch is unchanged.
    c.train.nonfinite = "stop"  # A NaN/inf step is never applied; then "stop" or "skip".
    c.train.log_every = 100
    c.train.checkpoint_every = 50_000
    c.train.keep_checkpoints = 3  # The latest N are kept ...
    c.train.keep_every = 0  # ... and every step divisible by this, if > 0.
    c.train.sample_every = 0  # Steps between preview grids (0: only at the end).

    # How samples are drawn (the preview grids and, later, evaluation): REPA's protocol.
    c.sample = ml_collections.ConfigDict()
    c.sample.method = "sde"  # "sde" (Euler-Maruyama), "euler" or "heun" (probability-flow ODE).
    c.sample.num_steps = 250
    c.sample.cfg_scale = 1.0  # w; 1 is no guidance.
    c.sample.guidance_low = 0.0  # Guidance acts where guidance_low <= t <= guidance_high ...
    c.sample.guidance_high = 1.0  # ... (REPA's interval recipe: w = 1.8, high = 0.7).
    # `python -m sara_jax.sample`: the evaluation set.
    c.sample.num_samples = 50_000
    c.sample.labels = "uniform"  # "uniform": i.i.d. uniform labels; "balanced": i % classes.
    c.sample.seed = 0
    c.sample.batch_size = 256  # Samples per chunk (the unit of resumption), per process.
    c.sample.per_class = 8
    c.sample.num_classes_shown = 10
    c.sample.use_ema = True
    return c


def _adamw_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.lr = 1e-4
    c.b1 = 0.9
    c.b2 = 0.999
    c.eps = 1e-8
    c.weight_decay = 0.0
    c.grad_clip = 1.0  # Global-norm clipping threshold.
    return c


def sit_preset(config: ml_collections.ConfigDict, size: str, patch_size: int = 2) -> None:
    """Sets the SiT shape fields to a published preset: S, B, L or XL, patch 2, 4 or 8."""
    config.model.depth, config.model.hidden_size, config.model.num_heads = PRESETS[size]
    config.model.patch_size = patch_size


def paper_config(
    size: str, encoder_depth: int, num_steps: int, terms: str
) -> ml_collections.ConfigDict:
    """A paper run: base_config() with a SiT preset (patch 2), its alignment depth, its length
    and its alignment terms (see `set_alignment`)."""
    config = base_config()
    sit_preset(config, size)
    config.model.encoder_depth = encoder_depth
    config.train.num_steps = num_steps
    set_alignment(config, terms)
    return config


# The methods compared throughout the paper, as sets of alignment terms.
METHODS = {"sara": "patch,struc,adv", "repa": "patch", "none": "none"}


def set_alignment(config: ml_collections.ConfigDict, terms: str) -> None:
    """Switches alignment terms on at the paper's weights and the others off.

    Args:
      terms: comma-separated subset of "patch", "struc", "adv" (lambda 0.5, beta 0.5,
        gamma 0.05), or "none" for a plain SiT. "patch" alone is REPA.
    """
    chosen = set() if terms == "none" else set(terms.split(","))
    weights = {"patch": 0.5, "struc": 0.5, "adv": 0.05}
    if unknown := chosen - weights.keys():
        raise ValueError(f"unknown alignment terms {sorted(unknown)}; choose from {list(weights)}")
    config.loss.patch_weight = weights["patch"] if "patch" in chosen else 0.0
    config.loss.struc_weight = weights["struc"] if "struc" in chosen else 0.0
    config.loss.adv_weight = weights["adv"] if "adv" in chosen else 0.0


def flat_items(c: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted field name, value) of every leaf of a ConfigDict."""
    for key, value in c.items():
        name = f"{prefix}{key}"
        if isinstance(value, ml_collections.ConfigDict):
            yield from flat_items(value, name + ".")
        else:
            yield name, value


def _check(ok: bool, field: str, expected: str, value: Any) -> None:
    if not ok:
        raise ValueError(f"config.{field} must be {expected}, got {value!r}")


def validate(c: ml_collections.ConfigDict, num_devices: int | None = None) -> None:
    """Checks fields, types, ranges and cross-field rules; raises ValueError naming the field.

    Args:
      c: the run's config.
      num_devices: devices of the data-parallel mesh, to check the batch divides over them.
    """
    schema = dict(flat_items(base_config()))
    fields = dict(flat_items(c))
    for name in fields.keys() - schema.keys():
        raise ValueError(f"config.{name} is not a known field (misspelt, or not used by sara_jax)")
    for name in schema.keys() - fields.keys():
        raise ValueError(f"config.{name} is missing (every field of base_config() is required)")
    for name, default in schema.items():
        value = fields[name]
        if isinstance(default, bool) or not isinstance(default, int | float):
            ok = type(value) is type(default)
        else:  # Numbers: an int may stand for a float, never the other way round.
            ok = not isinstance(value, bool) and isinstance(value, int | float)
            ok = ok and (isinstance(default, float) or isinstance(value, int))
        _check(ok, name, f"of type {type(default).__name__}", value)

    m = c.model
    positive = [
        "model.input_size",
        "model.in_channels",
        "model.patch_size",
        "model.depth",
        "model.hidden_size",
        "model.num_heads",
        "model.mlp_ratio",
        "model.num_classes",
        "projector.width",
        "encoder.image_size",
        "optim.lr",
        "optim.eps",
        "optim.grad_clip",
        "disc.optim.lr",
        "disc.optim.eps",
        "disc.optim.grad_clip",
        "data.image_size",
        "data.num_classes",
        "data.num_examples",
        "data.global_batch_size",
        "preprocess.num_shards",
        "preprocess.batch_size",
        "preprocess.num_threads",
        "train.num_steps",
        "train.grad_accum_steps",
        "train.log_every",
        "train.checkpoint_every",
        "train.keep_checkpoints",
        "sample.num_steps",
        "sample.per_class",
        "sample.num_classes_shown",
        "sample.num_samples",
        "sample.batch_size",
    ]
    for name in positive:
        _check(fields[name] > 0, name, "> 0", fields[name])
    non_negative = [
        "loss.patch_weight",
        "loss.struc_weight",
        "loss.adv_weight",
        "loss.adv_warmup_steps",
        "optim.weight_decay",
        "disc.optim.weight_decay",
        "data.num_workers",
        "sample.cfg_scale",
        "sample.guidance_low",
        "train.keep_every",
        "train.sample_every",
    ]
    for name in non_negative:
        _check(fields[name] >= 0, name, ">= 0", fields[name])
    for name in ["optim.b1", "optim.b2", "disc.optim.b1", "disc.optim.b2", "model.class_dropout"]:
        _check(0 <= fields[name] < 1, name, "in [0, 1)", fields[name])
    _check(0 <= c.train.ema_decay <= 1, "train.ema_decay", "in [0, 1]", c.train.ema_decay)
    _check(c.disc.every >= 1, "disc.every", ">= 1", c.disc.every)
    _check(
        1 <= m.encoder_depth <= m.depth,
        "model.encoder_depth",
        f"in [1, model.depth={m.depth}]",
        m.encoder_depth,
    )
    _check(
        m.hidden_size % m.num_heads == 0,
        "model.hidden_size",
        f"divisible by model.num_heads={m.num_heads}",
        m.hidden_size,
    )
    _check(m.hidden_size % 4 == 0, "model.hidden_size", "divisible by 4", m.hidden_size)
    _check(
        m.input_size % m.patch_size == 0,
        "model.input_size",
        f"divisible by model.patch_size={m.patch_size}",
        m.input_size,
    )
    for name in ["model.compute_dtype", "encoder.compute_dtype", "vae.compute_dtype"]:
        _check(fields[name] in DTYPES, name, f"one of {DTYPES}", fields[name])
    _check(
        c.encoder.name in ENCODERS,
        "encoder.name",
        f"one of {sorted(ENCODERS)}",
        c.encoder.name,
    )
    _check(
        c.loss.struc_reduction in ("mean", "sum"),
        "loss.struc_reduction",
        "'mean' or 'sum'",
        c.loss.struc_reduction,
    )
    _check(
        c.disc.bn_mode in ("frozen", "train"), "disc.bn_mode", "'frozen' or 'train'", c.disc.bn_mode
    )
    _check(
        c.train.nonfinite in ("stop", "skip"),
        "train.nonfinite",
        "'stop' or 'skip'",
        c.train.nonfinite,
    )
    _check(
        c.sample.method in sampling.SAMPLERS,
        "sample.method",
        f"one of {sampling.SAMPLERS}",
        c.sample.method,
    )
    _check(
        c.sample.labels in ("uniform", "balanced"),
        "sample.labels",
        "'uniform' or 'balanced'",
        c.sample.labels,
    )
    _check(
        c.sample.guidance_low <= c.sample.guidance_high <= 1.0,
        "sample.guidance_high",
        f">= sample.guidance_low={c.sample.guidance_low} and <= 1",
        c.sample.guidance_high,
    )
    _check(c.data.space in ("pixel", "latent"), "data.space", "'pixel' or 'latent'", c.data.space)
    _check(
        c.data.source in ("records", "shapes"),
        "data.source",
        "'records' or 'shapes'",
        c.data.source,
    )
    _check(
        c.preprocess.source in ("folder", "tfds") or c.preprocess.source.startswith("tfds:"),
        "preprocess.source",
        "'folder', 'tfds' (imagenet2012) or 'tfds:<name>'",
        c.preprocess.source,
    )
    _check(
        c.preprocess.image_codec in ("png", "raw"),
        "preprocess.image_codec",
        "'png' or 'raw'",
        c.preprocess.image_codec,
    )
    _check(
        m.num_classes == c.data.num_classes,
        "model.num_classes",
        f"equal to data.num_classes={c.data.num_classes}",
        m.num_classes,
    )

    # The SiT must see what the data provides: images in pixel space, 8x smaller latents.
    if c.data.space == "pixel":
        size, channels = c.data.image_size, 3
    else:
        size, channels = c.data.image_size // 8, 4
    _check(
        m.input_size == size,
        "model.input_size",
        f"{size} for data.space={c.data.space!r} at data.image_size={c.data.image_size}",
        m.input_size,
    )
    _check(
        m.in_channels == channels,
        "model.in_channels",
        f"{channels} for data.space={c.data.space!r}",
        m.in_channels,
    )

    spec = ENCODERS[c.encoder.name]
    patch_field = "encoder.arch.patch_size" if spec.family == "demo_vit" else "encoder.image_size"
    patch = c.encoder.arch.patch_size if spec.family == "demo_vit" else spec.patch_size
    if spec.family == "demo_vit":
        a = c.encoder.arch
        for name in ["patch_size", "embed_dim", "depth", "num_heads"]:
            _check(a[name] > 0, f"encoder.arch.{name}", "> 0", a[name])
        _check(
            a.embed_dim % a.num_heads == 0,
            "encoder.arch.embed_dim",
            f"divisible by encoder.arch.num_heads={a.num_heads}",
            a.embed_dim,
        )
        # The demo encoder reads the training images as they are (no resize).
        _check(
            c.encoder.image_size == c.data.image_size,
            "encoder.image_size",
            f"equal to data.image_size={c.data.image_size} for the demo_vit encoder",
            c.encoder.image_size,
        )
    else:
        _check(
            bool(c.encoder.checkpoint),
            "encoder.checkpoint",
            f"a hub id, path or converted directory (published: {spec.hub_id!r})",
            c.encoder.checkpoint,
        )
    _check(
        c.encoder.image_size % patch == 0,
        "encoder.image_size",
        f"divisible by the encoder's patch size {patch}",
        c.encoder.image_size,
    )
    enc_tokens = (c.encoder.image_size // patch) ** 2
    sit_tokens = (m.input_size // m.patch_size) ** 2
    _check(
        enc_tokens == sit_tokens,
        patch_field,
        f"such that the encoder has as many tokens as the SiT ({sit_tokens}), not {enc_tokens}",
        fields[patch_field],
    )
    if spec.family == "demo_vit":
        for name in ["steps", "batch_size", "num_examples"]:
            _check(
                c.encoder.pretrain[name] > 0,
                f"encoder.pretrain.{name}",
                "> 0",
                c.encoder.pretrain[name],
            )
        _check(c.encoder.pretrain.lr > 0, "encoder.pretrain.lr", "> 0", c.encoder.pretrain.lr)
        _check(
            c.encoder.pretrain.batch_size <= c.encoder.pretrain.num_examples,
            "encoder.pretrain.batch_size",
            f"<= encoder.pretrain.num_examples={c.encoder.pretrain.num_examples}",
            c.encoder.pretrain.batch_size,
        )

    if num_devices is not None:
        accum = c.train.grad_accum_steps
        _check(
            c.data.global_batch_size % (num_devices * accum) == 0,
            "data.global_batch_size",
            f"divisible by the number of devices ({num_devices}) x train.grad_accum_steps "
            f"({accum})",
            c.data.global_batch_size,
        )
