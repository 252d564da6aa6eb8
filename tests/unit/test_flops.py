"""The analytic counts of sara_jax.flops against the traced programs, XLA and the DiT paper.

Two independent references:
- the jaxpr: every dot_general and convolution the module traces to, with its real shapes (an
  exact count of what flops.py means to count, so the two must agree to rounding);
- XLA's `cost_analysis()`, which also counts elementwise work (LayerNorm, GELU's erf
  polynomial, softmax, residual adds): on these models, no narrower than 128 channels, that is
  at most 10% on top, so XLA's count must lie in [analytic, 1.1 x analytic]. It counts only
  the kernel taps of a convolution that land inside the unpadded input, so for D, whose 3x3
  convs pad by one pixel on 8x8 and 4x4 maps, it is below the analytic (full-kernel) count.
"""

import math

import jax
import jax.numpy as jnp
import pytest
from jax.extend.core import ClosedJaxpr, Jaxpr

from sara_jax.config import paper_config
from sara_jax.encoders.preprocess import encoder_inputs
from sara_jax.encoders.registry import ENCODERS
from sara_jax.models.clip_vit import ClipVisionTransformer
from sara_jax.models.dinov2 import DinoV2
from sara_jax.models.discriminator import Discriminator
from sara_jax.models.projector import ConvProjector, Projector
from sara_jax.models.sit import SiT
from sara_jax.training import flops
from sara_jax.training.state import build_models

BATCH = 2


def xla_flops(fn, *args) -> float:
    """XLA's FLOP count of the compiled fn(*args)."""
    return jax.jit(fn).lower(*args).compile().cost_analysis()["flops"]


def jaxpr_matmul_flops(jaxpr: Jaxpr) -> float:
    """2 x multiply-adds of every dot_general and convolution in a jaxpr and its sub-jaxprs."""
    total = 0.0
    for eqn in jaxpr.eqns:
        out = math.prod(eqn.outvars[0].aval.shape)
        if eqn.primitive.name == "dot_general":
            (contracting, _), _ = eqn.params["dimension_numbers"]
            lhs = eqn.invars[0].aval.shape
            total += 2 * out * math.prod(lhs[i] for i in contracting)
        elif eqn.primitive.name == "conv_general_dilated":
            kernel = eqn.invars[1].aval.shape
            out_features = kernel[eqn.params["dimension_numbers"].rhs_spec[0]]
            total += 2 * out * math.prod(kernel) // out_features
        for value in eqn.params.values():
            for sub in value if isinstance(value, tuple) else (value,):
                if isinstance(sub, ClosedJaxpr | Jaxpr):
                    inner = jaxpr_matmul_flops(sub.jaxpr if isinstance(sub, ClosedJaxpr) else sub)
                    total += inner * eqn.params.get("length", 1)  # scan repeats its body
    return total


def traced_flops(fn, *args) -> float:
    return jaxpr_matmul_flops(jax.make_jaxpr(fn)(*args).jaxpr)


def check_count(analytic: float, fn, *args, xla_upper: float = 1.1) -> None:
    """analytic is per image; fn(*args) runs a batch of BATCH images."""
    assert traced_flops(fn, *args) / BATCH == pytest.approx(analytic, rel=1e-9)
    xla = xla_flops(fn, *args) / BATCH
    assert analytic <= xla <= xla_upper * analytic, (xla, analytic, xla / analytic)


def small_sit(**overrides) -> SiT:
    kwargs = dict(
        input_size=16,
        in_channels=4,
        patch_size=2,
        hidden_size=256,
        depth=2,
        num_heads=4,
        num_classes=10,
        encoder_depth=1,
    )
    return SiT(**(kwargs | overrides))


def sit_inputs(sit: SiT):
    x = jnp.zeros((BATCH, sit.input_size, sit.input_size, sit.in_channels))
    return x, jnp.zeros((BATCH,)), jnp.zeros((BATCH,), jnp.int32)


@pytest.mark.parametrize("overrides", [{}, {"patch_size": 4, "mlp_ratio": 2.0}])
def test_sit_forward_matches_xla(overrides):
    sit = small_sit(**overrides)
    inputs = sit_inputs(sit)
    params = sit.init(jax.random.key(0), *inputs)
    check_count(flops.sit_forward(sit), lambda p, *a: sit.apply(p, *a), params, *inputs)


def test_training_the_sit_costs_three_forward_passes():
    sit = small_sit()
    inputs = sit_inputs(sit)
    params = sit.init(jax.random.key(0), *inputs)

    def loss(p):
        velocity, hidden = sit.apply(p, *inputs)
        return jnp.sum(velocity**2) + jnp.sum(hidden**2)

    # The 3x convention overestimates a little: the gradients of the inputs (x, t) are not
    # needed, so the patch embedding's and the timestep MLP's first layer's backward passes
    # are one matmul, not two.
    ratio = traced_flops(jax.grad(loss), params) / BATCH / (3 * flops.sit_forward(sit))
    assert 0.98 <= ratio < 1, ratio


@pytest.mark.parametrize(
    "module",
    [
        DinoV2(patch_size=4, embed_dim=128, depth=2, num_heads=2, pos_grid=4),
        DinoV2(
            patch_size=4,
            embed_dim=128,
            depth=2,
            num_heads=2,
            pos_grid=4,
            num_register_tokens=4,
            ffn="swiglu",
        ),
        ClipVisionTransformer(patch_size=4, embed_dim=128, depth=2, num_heads=2, pos_grid=4),
    ],
    ids=["dinov2", "dinov2_reg_swiglu", "clip"],
)
def test_vit_forward_matches_xla(module):
    images = jnp.zeros((BATCH, 16, 16, 3))
    params = module.init(jax.random.key(0), images)
    check_count(flops.vit_forward(module), lambda p, x: module.apply(p, x), params, images)


def test_encoder_resize_matches_xla():
    # REPA's 256 -> 224 resize, at 64 -> 56 here: two (out, in) matmuls.
    spec = ENCODERS["dinov2_vitb14"]
    images = jnp.zeros((BATCH, 64, 64, 3), jnp.uint8)
    check_count(flops.resize_matmuls(64, 56), lambda x: encoder_inputs(x, spec, 56), images)
    assert flops.resize_matmuls(56, 56) == 0


def test_projector_matches_xla():
    projector = Projector(width=256, z_dim=128)
    h = jnp.zeros((BATCH, 16, 192))
    params = projector.init(jax.random.key(0), h)
    analytic = flops.projector_forward(projector, 16, 192)
    check_count(analytic, lambda p, x: projector.apply(p, x), params, h)


@pytest.mark.parametrize("kernel_size", [1, 3])
def test_conv_projector_matches_the_traced_program(kernel_size):
    projector = ConvProjector(kernel_size=kernel_size, z_dim=128)
    h = jnp.zeros((BATCH, 16, 192))
    params = projector.init(jax.random.key(0), h)
    analytic = flops.projector_forward(projector, 16, 192)
    assert analytic == 2 * 16 * kernel_size**2 * 192 * 128
    forward = lambda p, x: projector.apply(p, x)  # noqa: E731
    assert traced_flops(forward, params, h) / BATCH == pytest.approx(analytic, rel=1e-9)
    # XLA skips the taps on the zero padding of the 4 x 4 grid (36 of 144 taps land inside
    # for k = 3), as for D.
    xla = xla_flops(forward, params, h) / BATCH
    low = 0.5 if kernel_size > 1 else 1.0
    assert low * analytic <= xla <= 1.1 * analytic, (xla, analytic)


@pytest.mark.parametrize("tokens, use_maxpool", [(64, False), (81, True)])
def test_discriminator_matches_xla(tokens, use_maxpool):
    disc = Discriminator(use_maxpool=use_maxpool)
    z = jnp.zeros((BATCH, tokens, 96))
    variables = disc.init(jax.random.key(0), z, train=False)
    analytic = flops.discriminator_forward(disc, tokens, 96)

    def forward(v, x):
        return disc.apply(v, x, train=False)

    assert traced_flops(forward, variables, z) / BATCH == pytest.approx(analytic, rel=1e-9)
    # XLA skips the taps on the zero padding (see the module docstring).
    assert 0.6 * analytic < xla_flops(forward, variables, z) / BATCH < analytic


@pytest.mark.parametrize("size, dit_gflops", [("B", 23.0), ("L", 80.7), ("XL", 118.6)])
def test_sit_forward_matches_the_dit_paper(size, dit_gflops):
    # DiT's "Gflops" are multiply-adds (facebookresearch/DiT#14); here a multiply-add is 2.
    sit = build_models(paper_config(size, 4, 1, "none"), 768).sit
    assert flops.sit_forward(sit) / 2e9 == pytest.approx(dit_gflops, abs=0.05)


def test_train_step_components_follow_the_terms_that_are_on():
    counts = {}
    for method, terms in [("sit", "none"), ("repa", "patch"), ("sara", "patch,struc,adv")]:
        config = paper_config("XL", 8, 1, terms)
        models = build_models(config, 768)
        encoder = DinoV2(patch_size=14, embed_dim=768, depth=12, num_heads=12, pos_grid=16)
        counts[method] = flops.train_step(config, *models, encoder)
        assert counts[method]["total"] == pytest.approx(
            sum(counts[method][k] for k in flops.COMPONENTS)
        )
    assert counts["sit"]["total"] == counts["sit"]["sit"]
    assert counts["sit"]["sit"] == pytest.approx(3 * 2 * 118.6e9, rel=1e-3)
    assert counts["repa"]["encoder"] > 0 and counts["repa"]["disc_adv"] == 0
    # SARA's extra FLOPs (D and two autocorrelations) are a fraction of a percent of REPA's.
    extra = counts["sara"]["total"] / counts["repa"]["total"] - 1
    assert 0 < extra < 0.005


def test_sampling_counts_every_velocity_evaluation():
    config = paper_config("B", 4, 1, "none")
    sit = build_models(config, 768).sit
    config.sample.method, config.sample.num_steps, config.sample.cfg_scale = "sde", 250, 1.0
    assert flops.sampling(config.sample, sit) == 250 * flops.sit_forward(sit)
    config.sample.method, config.sample.cfg_scale = "heun", 1.5
    assert flops.sampling(config.sample, sit) == 2 * 499 * flops.sit_forward(sit)
    # REPA's FID recipe guides the 172 SDE steps with t <= 0.7 of linspace(1, 0.04, 250)
    # (t_i = 1 - 0.96 i / 249 <= 0.7 from i = 78): 250 + 172 evaluations, not 500.
    config.sample.method, config.sample.cfg_scale = "sde", 1.8
    config.sample.guidance_high = 0.7
    assert flops.sampler_evaluations(config.sample) == 250 + 172
    # Heun at 50 steps: the 35 steps from t = 0.7 (i = 15) on are guided, corrector included.
    config.sample.method, config.sample.num_steps = "heun", 50
    assert flops.sampler_evaluations(config.sample) == 99 + 35 * 2 - 1
