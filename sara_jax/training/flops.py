"""Analytic FLOPs per image of the SARA training step and of sampling, for MFU.

What is counted (the usual MFU convention, as in PaLM's appendix B):
- Matmuls and convolutions only, one multiply-add = 2 FLOPs: dense layers, patch embeddings,
  attention's QK^T and AV, D's convolutions, the encoder's bicubic-resize matmuls and the
  structural loss's autocorrelations. Norms, softmax, activations, losses and the optimizer
  and EMA updates are elementwise and memory-bound; they are left out (XLA's own count, which
  includes them, is 1-10% higher on the small models of tests/unit/test_flops.py).
- The DiT paper's "Gflops" count a multiply-add as one (facebookresearch/DiT#14): its 118.6
  Gflops of a DiT-XL/2 forward pass are 237.2 GFLOPs here.
- A trained network costs 3x its forward pass (the backward pass takes gradients with respect
  to activations and to weights, each about one forward); the frozen encoder costs one forward.
  D under L_adv is held fixed, so the generator pays its forward and a backward to its input:
  2x. D's own step (on `step % disc.every == 0`) is a forward and backward on real and fake
  tokens, 6x; on the other steps the step still scores real and fake once for the logged
  accuracies, 2x; the per-step figure averages the two (the lax.cond path of GPU and TPU; the
  CPU's select path runs D's update on every step, which this does not count).

MFU divides the achieved FLOP/s by the device's dense bf16 peak, `PEAK_BF16_TFLOPS`.
"""

import math

import ml_collections
import numpy as np

from sara_jax.models.clip_vit import ClipVisionTransformer
from sara_jax.models.dinov2 import DinoV2
from sara_jax.models.discriminator import Discriminator
from sara_jax.models.projector import ConvProjector, Projector
from sara_jax.models.sit import SiT, TimestepEmbedder
from sara_jax.objective.sara import adversarial, aligned
from sara_jax.sampling import samplers

FLOPS_PER_MAC = 2

# Dense (no 2:4 sparsity) bf16 matmul peak per device, TFLOP/s, by jax's `device_kind`.
# NVIDIA's datasheets quote bf16 "with sparsity": H100 SXM 1,979 and PCIe 1,513, H200 SXM
# 1,979 (halved here); A100 312 dense. Google Cloud's TPU pages: v4 275, v5e 197, v5p 459,
# v6e (Trillium) 918. Devices not listed (CPUs included) have no MFU.
PEAK_BF16_TFLOPS = {
    "NVIDIA H100 80GB HBM3": 989.5,  # SXM5
    "NVIDIA H100 PCIe": 756.5,
    "NVIDIA H200": 989.5,  # SXM
    "NVIDIA A100-SXM4-80GB": 312.0,
    "NVIDIA A100-SXM4-40GB": 312.0,
    "NVIDIA A100 80GB PCIe": 312.0,
    "NVIDIA A100-PCIE-40GB": 312.0,
    "TPU v4": 275.0,
    "TPU v5 lite": 197.0,  # v5e
    "TPU v5": 459.0,  # v5p
    "TPU v6 lite": 918.0,  # v6e
}

COMPONENTS = ("sit", "projector", "encoder", "structural", "disc_adv", "disc_step")


def dense(tokens: int, d_in: int, d_out: int) -> float:
    """A (tokens, d_in) x (d_in, d_out) matmul."""
    return FLOPS_PER_MAC * tokens * d_in * d_out


def self_attention(tokens: int, width: int) -> float:
    """QK^T and AV over all heads: each is (T, T) x width multiply-adds, whatever the split."""
    return 2 * FLOPS_PER_MAC * tokens * tokens * width


def transformer_block(tokens: int, width: int, mlp_flops_per_token: float) -> float:
    """Fused qkv projection, attention, output projection and the feed-forward."""
    projections = dense(tokens, width, 3 * width) + dense(tokens, width, width)
    return projections + self_attention(tokens, width) + tokens * mlp_flops_per_token


def sit_forward(sit: SiT) -> float:
    """One SiT forward pass on one image: patch embedding, timestep MLP, per block the adaLN
    modulation (per image) and the transformer, then the final adaLN and linear head."""
    p, d, c = sit.patch_size, sit.hidden_size, sit.in_channels
    tokens = (sit.input_size // p) ** 2
    out_channels = 2 * c if sit.learn_sigma else c
    mlp = dense(1, d, int(d * sit.mlp_ratio)) + dense(1, int(d * sit.mlp_ratio), d)
    block = dense(1, d, 6 * d) + transformer_block(tokens, d, mlp)
    return (
        dense(tokens, p * p * c, d)
        + dense(1, TimestepEmbedder.frequency_dim, d)
        + dense(1, d, d)
        + sit.depth * block
        + dense(1, d, 2 * d)
        + dense(tokens, d, p * p * out_channels)
    )


def projector_forward(projector: Projector | ConvProjector, tokens: int, hidden_size: int) -> float:
    """The 3-layer MLP hidden -> width -> width -> z_dim on every token, or iREPA's k x k
    convolution hidden -> z_dim at every token (its full kernel: the taps on the zero padding
    at the grid's border are counted, as for D)."""
    if isinstance(projector, ConvProjector):
        return projector.kernel_size**2 * dense(tokens, hidden_size, projector.z_dim)
    w = projector.width
    return dense(tokens, hidden_size, w) + dense(tokens, w, w) + dense(tokens, w, projector.z_dim)


def vit_forward(vit: DinoV2 | ClipVisionTransformer) -> float:
    """A ViT encoder's forward pass on one image at its `pos_grid` x `pos_grid` patches, with
    its CLS (and register) tokens; the MLP is GELU or, for DINOv2's ViT-g, SwiGLU."""
    d, p = vit.embed_dim, vit.patch_size
    patches = vit.pos_grid**2
    registers, ffn = (vit.num_register_tokens, vit.ffn) if isinstance(vit, DinoV2) else (0, "mlp")
    if ffn == "swiglu":  # DINOv2's SwiGLUFFNFused: w12 to 2 x hidden, w3 back.
        hidden = (int(d * vit.mlp_ratio * 2 / 3) + 7) // 8 * 8
        mlp = dense(1, d, 2 * hidden) + dense(1, hidden, d)
    else:
        hidden = int(d * vit.mlp_ratio)
        mlp = dense(1, d, hidden) + dense(1, hidden, d)
    tokens = 1 + registers + patches
    return dense(patches, p * p * 3, d) + vit.depth * transformer_block(tokens, d, mlp)


def resize_matmuls(in_size: int, out_size: int) -> float:
    """sara_jax.models.resize's separable resampling of an (in, in, 3) image to (out, out, 3): a
    (out, in) matrix along the rows, then along the columns; nothing when the sizes agree."""
    if in_size == out_size:
        return 0.0
    return dense(out_size, in_size, in_size * 3) + dense(out_size, in_size, out_size * 3)


def _conv_out(side: int, stride: int) -> int:
    """Output side of a 3x3 conv with torch's 1-pixel padding (or a 1x1 one) at `stride`."""
    return (side - 1) // stride + 1


def discriminator_forward(disc: Discriminator, tokens: int, z_dim: int) -> float:
    """D's forward pass on one (tokens, z_dim) token map: 1x1 stem, layer1, layer2, fc."""
    side = math.isqrt(tokens)
    flops = dense(side * side, z_dim, 64)
    if disc.use_maxpool:
        side = _conv_out(side, 2)
    channels = 64
    for features, strides in ((64, 1), (128, 2)):  # layer1, layer2: two basic blocks each.
        for i in range(2):
            stride = strides if i == 0 else 1
            out = _conv_out(side, stride)
            flops += dense(out * out, 9 * channels, features)
            flops += dense(out * out, 9 * features, features)
            if stride != 1 or channels != features:
                flops += dense(out * out, channels, features)
            side, channels = out, features
    return flops + dense(1, channels, 1)


def autocorrelation(tokens: int, width: int) -> float:
    """One (N, D) x (D, N) token self-similarity matrix."""
    return dense(tokens, width, tokens)


def train_step(
    config: ml_collections.ConfigDict,
    sit: SiT,
    projector: Projector | ConvProjector,
    disc: Discriminator,
    encoder: DinoV2 | ClipVisionTransformer,
) -> dict[str, float]:
    """FLOPs per image of one training step, by component, for the terms the config turns on.

    Args:
      config: the run's config (loss weights, disc.every, image sizes).
      sit, projector, disc: the trained modules (training.state.build_models).
      encoder: the frozen encoder module (encoders.load.encoder_module).
    Returns: FLOPs of each of COMPONENTS and their "total"; components a plain SiT or REPA
      does not run are 0. Multiply by the global batch for the
      step.
    """
    tokens = (sit.input_size // sit.patch_size) ** 2
    z_dim = projector.z_dim
    counts = dict.fromkeys(COMPONENTS, 0.0)
    counts["sit"] = 3 * sit_forward(sit)
    if aligned(config.loss):
        counts["projector"] = 3 * projector_forward(projector, tokens, sit.hidden_size)
        counts["encoder"] = vit_forward(encoder) + resize_matmuls(
            config.data.image_size, config.encoder.image_size
        )
    if config.loss.struc_weight > 0:
        # A(z_enc) is a constant; A(h_den) is differentiated (two more matmuls of its size).
        counts["structural"] = 4 * autocorrelation(tokens, z_dim)
    if adversarial(config.loss):
        d_forward = discriminator_forward(disc, tokens, z_dim)
        counts["disc_adv"] = 2 * d_forward
        every = config.disc.every
        counts["disc_step"] = (6 + 2 * (every - 1)) / every * d_forward
    counts["total"] = sum(counts.values())
    return counts


def sampler_evaluations(sample: ml_collections.ConfigDict) -> int:
    """Network forward passes per sample of `config.sample`'s sampler: one per step (SDE,
    Euler, DDPM), two per step but the last (Heun); a guided step evaluates a doubled batch:
    the steps `samplers.guided_steps` picks in the guidance interval, every step for DDPM
    (`ddpm.guided_model`, no interval)."""
    steps, guiding = sample.num_steps, sample.cfg_scale != 1.0
    if sample.method == "ddpm":
        return steps * (2 if guiding else 1)
    calls = np.ones(steps, np.int64)
    if sample.method == "heun":
        calls[:-1] = 2
    guidance = samplers.Guidance(0, sample.cfg_scale, (sample.guidance_low, sample.guidance_high))
    guided = samplers.guided_steps(samplers.time_grid(sample.method, steps), guidance)
    return int((calls * (1 + guided)).sum())


def sampling(sample: ml_collections.ConfigDict, sit: SiT) -> float:
    """FLOPs per image of drawing one sample with `sample` = `config.sample` (the VAE decode
    excluded)."""
    return sampler_evaluations(sample) * sit_forward(sit)
