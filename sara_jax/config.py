"""The run configuration: the shared defaults every config file starts from, and validation.

Defaults are the paper's SiT-XL/2 ImageNet-256 run (Table 4, REPA's protocol); the files in
`configs/` change what differs. `validate` runs before anything is built or compiled and names
the offending field in its error.
"""

from collections.abc import Iterator
from typing import Any

import ml_collections

from sara_jax.encoders.registry import ENCODERS
from sara_jax.models.sit import PRESETS
from sara_jax.sampling import ddpm, samplers

DTYPES = ("float32", "bfloat16")
FAMILIES = ("sit", "dit")


def base_config() -> ml_collections.ConfigDict:
    """Every field a run reads, with the paper's values (SiT-XL/2, DINOv2-B, ImageNet-256)."""
    c = ml_collections.ConfigDict()
    c.seed = 0  # Model init and every per-example draw (with the step and example index).

    c.model = ml_collections.ConfigDict()  # The SiT.
    # The objective, which also sets the output head and the samplers: "sit" (velocity of the
    # linear interpolant) or "dit" (DDPM eps + learned variance, `diffusion` below; "ddpm").
    c.model.family = "sit"
    c.model.input_size = 32  # SD-VAE latents of 256x256 images.
    c.model.in_channels = 4  # 4 for SD-VAE latents, 3 for pixels.
    c.model.patch_size = 2  # Side of the square patches that become tokens.
    c.model.depth = 28  # Transformer blocks.
    c.model.hidden_size = 1152  # Token width.
    c.model.num_heads = 16  # Attention heads per block.
    c.model.mlp_ratio = 4.0  # MLP width / token width.
    c.model.num_classes = 1000  # Class labels (one more embedding is the null class).
    c.model.encoder_depth = 8  # Block whose output is aligned (1-based).
    c.model.class_dropout = 0.1  # Labels replaced by the null class in training (for CFG).
    c.model.compute_dtype = "bfloat16"  # Matmuls and convolutions; params stay float32.
    c.model.remat = False  # Recompute each SiT block in the backward pass (saves memory).

    c.diffusion = ml_collections.ConfigDict()  # The discrete DDPM of model.family "dit".
    c.diffusion.num_timesteps = 1000  # Training steps T; the DiT is fed t in 0 .. T-1.
    c.diffusion.beta_start = 1e-4  # First beta of the linear schedule (DiT's).
    c.diffusion.beta_end = 0.02  # Last beta of the linear schedule (DiT's).

    c.projector = ml_collections.ConfigDict()  # MLP from SiT tokens to the encoder's width.
    c.projector.width = 2048  # Hidden width of the 3-layer MLP.

    c.encoder = ml_collections.ConfigDict()  # The frozen encoder whose tokens are the targets.
    c.encoder.name = "dinov2_vitb14"  # A key of encoder_registry.ENCODERS.
    # A Hugging Face hub id, a local directory / .safetensors / .pth file, or a directory of
    # params written by `python -m sara_jax.convert` (unused by "demo_vit").
    c.encoder.checkpoint = "facebook/dinov2-base"
    c.encoder.image_size = 224  # REPA resizes the 256-px images to 224: 16 x 16 patches of 14.
    c.encoder.compute_dtype = "bfloat16"  # Its forward pass; targets are compared in float32.
    # Architecture and pretraining of the "demo_vit" encoder (unused by the others).
    c.encoder.arch = ml_collections.ConfigDict()
    c.encoder.arch.patch_size = 14  # Pixels per patch side.
    c.encoder.arch.embed_dim = 768  # Token width (the alignment target's z_dim).
    c.encoder.arch.depth = 12  # Transformer blocks.
    c.encoder.arch.num_heads = 12  # Attention heads per block.
    c.encoder.arch.num_register_tokens = 0  # Extra learned tokens (DINOv2 with registers).
    c.encoder.pretrain = ml_collections.ConfigDict()  # Its supervised pretraining, cached.
    c.encoder.pretrain.steps = 300  # Classification steps on the training images.
    c.encoder.pretrain.batch_size = 128  # Images per step.
    c.encoder.pretrain.lr = 1e-3  # Peak AdamW learning rate (cosine decay).
    c.encoder.pretrain.num_examples = 4096  # The first N records; later ones are held out.
    c.encoder.pretrain.cache_dir = "~/.cache/sara_jax"  # Pretrained weights, keyed by config.

    c.loss = ml_collections.ConfigDict()  # Weights of Eq. 11's terms.
    c.loss.patch_weight = 0.5  # lambda: weight of L_patch (REPA's alignment).
    c.loss.struc_weight = 0.5  # beta: weight of L_struc (autocorrelation alignment).
    c.loss.adv_weight = 0.05  # gamma: weight of L_adv (adversarial alignment).
    c.loss.struc_reduction = "mean"  # "mean" over the N^2 entries or "sum" (Eq. 8 as written).
    c.loss.adv_warmup_steps = 0  # Generator steps with gamma = 0 before L_adv switches on.

    c.disc = ml_collections.ConfigDict()  # The discriminator D (ResNet-18 trunk on tokens).
    c.disc.every = 5  # D is updated on steps with step % every == 0.
    c.disc.use_maxpool = False  # Keep ResNet's stem max pool (halves the token grid).
    c.disc.bn_mode = "frozen"  # "frozen": running statistics; "train": batch statistics.
    # ImageNet ResNet-18 weights for bn1, layer1, layer2 ("" = random init): a hub id or path,
    # torchvision naming (timm/resnet18.tv_in1k holds torchvision's weights) or transformers'.
    c.disc.checkpoint = "timm/resnet18.tv_in1k"
    c.disc.optim = _adamw_config()  # D's own AdamW.

    c.optim = _adamw_config()  # AdamW of the SiT and the projector.

    c.data = ml_collections.ConfigDict()  # The training data.
    c.data.source = "records"  # "records": `python -m sara_jax.preprocess` output; "shapes".
    c.data.space = "latent"  # "latent": SD-VAE latents; "pixel": images in [-1, 1].
    c.data.dir = ""  # The records directory (preprocess writes it, training reads it).
    c.data.image_size = 256  # Side of the (square) training images, in pixels.
    c.data.num_classes = 1000  # Class labels in the data.
    c.data.num_examples = 1_281_167  # Examples in the data set (checked against it).
    c.data.seed = 0  # Shuffling order.
    c.data.global_batch_size = 256  # Examples per step over all devices and hosts.
    c.data.num_workers = 8  # Grain worker processes per host (0: in the main process).
    c.data.latent_scale = 0.18215  # SD-VAE latents are multiplied by this.

    c.vae = ml_collections.ConfigDict()  # The Stable Diffusion VAE (latent space).
    c.vae.checkpoint = "stabilityai/sd-vae-ft-mse"  # Encodes the training latents.
    c.vae.decode_checkpoint = "stabilityai/sd-vae-ft-ema"  # Decodes samples (REPA's choice).
    c.vae.compute_dtype = "float32"  # Its encoder and decoder.

    # `python -m sara_jax.preprocess`: raw ImageNet -> ADM crop -> VAE -> records in data.dir.
    c.preprocess = ml_collections.ConfigDict()
    # "folder": <path>/<class>/<image>; "tfds": imagenet2012 in TFDS data_dir <path>.
    c.preprocess.source = "folder"
    c.preprocess.path = ""  # The image folder, or the TFDS data_dir.
    c.preprocess.split = "train"  # The split to read.
    c.preprocess.num_shards = 1024  # ArrayRecord files written.
    c.preprocess.batch_size = 256  # Images encoded at once by each process.
    c.preprocess.num_threads = 16  # Threads decoding and cropping images.
    c.preprocess.image_codec = "png"  # "png" (lossless, ~2x smaller) or "raw" uint8.

    c.train = ml_collections.ConfigDict()  # The loop: length, EMA, logs, checkpoints.
    c.train.num_steps = 400_000  # Optimizer steps of the whole run.
    c.train.ema_decay = 0.9999  # EMA of the params, used for samples.
    c.train.grad_accum_steps = 1  # Micro-batches per step; the global batch is unchanged.
    c.train.nonfinite = "stop"  # A NaN/inf step is never applied; then "stop" or "skip".
    c.train.log_every = 100  # Steps between logged (averaged) metrics.
    c.train.checkpoint_every = 50_000  # Steps between checkpoints (also at the end).
    c.train.keep_checkpoints = 3  # The latest N are kept ...
    c.train.keep_every = 0  # ... and every step divisible by this, if > 0.
    c.train.sample_every = 0  # Steps between preview grids (0: only at the end).

    # How samples are drawn (the preview grids and, later, evaluation): REPA's protocol.
    c.sample = ml_collections.ConfigDict()
    # SiT: "sde" (Euler-Maruyama), "euler" or "heun" (probability-flow ODE); DiT: "ddpm"
    # (ancestral, on sample.num_steps of the diffusion.num_timesteps steps, as DiT respaces).
    c.sample.method = "sde"
    c.sample.num_steps = 250  # Sampler steps N.
    c.sample.cfg_scale = 1.0  # w; 1 is no guidance.
    c.sample.guidance_low = 0.0  # Guidance acts where guidance_low <= t <= guidance_high ...
    c.sample.guidance_high = 1.0  # ... (REPA's interval recipe: w = 1.8, high = 0.7).
    c.sample.ddpm_cfg_channels = 3  # DDPM: guide eps channels [0, N), the rest conditional (DiT).
    # `python -m sara_jax.sample`: the evaluation set.
    c.sample.num_samples = 50_000  # Size of the evaluation set.
    c.sample.labels = "uniform"  # "uniform": i.i.d. uniform labels; "balanced": i % classes.
    c.sample.seed = 0  # Labels and noise of the evaluation set.
    c.sample.batch_size = 256  # Samples per chunk (the unit of resumption), per process.
    c.sample.per_class = 8  # Preview grid: samples per row (class).
    c.sample.num_classes_shown = 10  # Preview grid: rows, classes spread evenly.
    c.sample.use_ema = True  # Sample from the EMA params (else the raw params).

    # The in-training FID: every `eval.every` steps, a small-budget FID logged as `fid`.
    c.eval = ml_collections.ConfigDict()
    c.eval.every = 0  # Steps between evaluations (0: never).
    c.eval.num_samples = 2000  # Samples per evaluation (drawn as the sample job draws them).
    c.eval.num_steps = 50  # Sampler steps (config.sample's method and guidance).
    # Reference .npz: ADM's stats (e.g. VIRTUAL_imagenet256_labeled.npz) or images (arr_0).
    c.eval.reference = ""
    c.eval.inception = "pt_inception-2015-12-05-6726825d.pth"  # pytorch-fid's FID Inception.
    c.eval.batch_size = 200  # Images per Inception batch, per process.
    return c


def _adamw_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.lr = 1e-4  # Learning rate (constant).
    c.b1 = 0.9  # Adam beta1.
    c.b2 = 0.999  # Adam beta2.
    c.eps = 1e-8  # Adam epsilon.
    c.weight_decay = 0.0  # Decoupled weight decay.
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
        "sample.ddpm_cfg_channels",
        "diffusion.num_timesteps",
        "diffusion.beta_start",
        "diffusion.beta_end",
        "eval.num_samples",
        "eval.num_steps",
        "eval.batch_size",
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
        "eval.every",
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
    _check(m.family in FAMILIES, "model.family", f"one of {FAMILIES}", m.family)
    # Each objective has its own samplers: the SiT's integrate a velocity, DDPM needs eps and
    # the learned variance.
    methods = samplers.SAMPLERS if m.family == "sit" else ddpm.SAMPLERS
    _check(
        c.sample.method in methods,
        "sample.method",
        f"one of {methods} for model.family={m.family!r}",
        c.sample.method,
    )
    d = c.diffusion
    _check(
        d.beta_start <= d.beta_end < 1,
        "diffusion.beta_end",
        f"in [diffusion.beta_start={d.beta_start}, 1)",
        d.beta_end,
    )
    _check(d.num_timesteps >= 2, "diffusion.num_timesteps", ">= 2", d.num_timesteps)
    _check(
        c.sample.ddpm_cfg_channels <= m.in_channels,
        "sample.ddpm_cfg_channels",
        f"<= model.in_channels={m.in_channels}",
        c.sample.ddpm_cfg_channels,
    )
    if c.sample.method == "ddpm":
        _check(
            2 <= c.sample.num_steps <= d.num_timesteps,
            "sample.num_steps",
            f"in [2, diffusion.num_timesteps={d.num_timesteps}] for the DDPM sampler",
            c.sample.num_steps,
        )
        _check(
            2 <= c.eval.num_steps <= d.num_timesteps,
            "eval.num_steps",
            f"in [2, diffusion.num_timesteps={d.num_timesteps}] for the DDPM sampler",
            c.eval.num_steps,
        )
        _check(
            (c.sample.guidance_low, c.sample.guidance_high) == (0.0, 1.0),
            "sample.guidance_low",
            "0.0 with sample.guidance_high 1.0 for the DDPM sampler (DiT's CFG has no interval)",
            c.sample.guidance_low,
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

    if c.eval.every:
        for name in ["eval.reference", "eval.inception"]:
            _check(bool(fields[name]), name, "a path when eval.every > 0", fields[name])

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
            f"a hub id, path or converted directory (published: {spec.hub_id or spec.download!r})",
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
