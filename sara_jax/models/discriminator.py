"""SARA's discriminator D: a truncated ResNet-18 that scores a token map as real or fake.

The trunk is torchvision's ResNet-18 up to layer2 (layer3/layer4 removed) with conv1 replaced
by a 1x1 conv from the token width to 64 channels, so ImageNet weights of bn1, layer1 and
layer2 convert by renaming: submodules carry torchvision's names with "." -> "_"
(`layer1.0.conv1` -> `layer1_0/conv1`). Convs are channels-last (HWIO kernels).
"""

import math
from functools import partial

import flax.linen as nn
import jax
import jax.numpy as jnp

# torchvision's ResNet init: kaiming normal, fan_out, ReLU gain (untruncated).
kaiming_fan_out = nn.initializers.variance_scaling(2.0, "fan_out", "normal")

# torch pads a 3x3 conv by one pixel on every side; 'SAME' would pad (0, 1) when a stride-2
# conv meets an even input, shifting the sampling grid away from torchvision's.
TORCH_PAD_3X3 = ((1, 1), (1, 1))


def _conv(dtype: jnp.dtype):
    """Bias-free conv with torchvision's init; the BatchNorm after it makes a bias redundant."""
    return partial(nn.Conv, use_bias=False, kernel_init=kaiming_fan_out, dtype=dtype)


def _batch_norm(train: bool, axis_name: str | None):
    """torch BatchNorm2d's defaults: eps 1e-5, torch momentum 0.1 == flax momentum 0.9."""
    return partial(
        nn.BatchNorm,
        use_running_average=not train,
        momentum=0.9,
        epsilon=1e-5,
        axis_name=axis_name,
        dtype=jnp.float32,
    )


class BasicBlock(nn.Module):
    """ResNet basic block: two 3x3 conv-BN pairs and an identity or 1x1 conv-BN shortcut.

    Attributes:
      features: output channels.
      strides: stride of the first conv (and of the shortcut).
      axis_name: mesh axis over which train-mode batch statistics are averaged.
      dtype: compute dtype of the convs.
    """

    features: int
    strides: int
    axis_name: str | None
    dtype: jnp.dtype

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        """x: (B, H, W, C) -> (B, H/strides, W/strides, features) float32."""
        conv = _conv(self.dtype)
        norm = _batch_norm(train, self.axis_name)
        strides = (self.strides, self.strides)
        y = conv(self.features, (3, 3), strides, TORCH_PAD_3X3, name="conv1")(x)
        y = nn.relu(norm(name="bn1")(y))
        y = conv(self.features, (3, 3), padding=TORCH_PAD_3X3, name="conv2")(y)
        y = norm(name="bn2")(y)
        if self.strides != 1 or x.shape[-1] != self.features:
            x = conv(self.features, (1, 1), strides, "VALID", name="downsample_conv")(x)
            x = norm(name="downsample_bn")(x)
        return nn.relu(x + y)


class Discriminator(nn.Module):
    """D(tokens) -> one real/fake logit per sample.

    conv1 (1x1) -> bn1 -> ReLU -> [maxpool 3x3/2] -> layer1 (2 x 64) -> layer2 (2 x 128, /2)
    -> global average pool -> fc (128 -> 1).

    Attributes:
      use_maxpool: keep ResNet's stem maxpool (halves the token grid before layer1).
      axis_name: data-parallel mesh axis; in train mode every BatchNorm averages its batch
        statistics over it (lax.pmean), so D's output does not depend on the device count.
        Must be bound (e.g. inside jax.shard_map) when called with train=True.
      dtype: compute dtype of the convs; params, BatchNorm and the logit are float32.
    """

    use_maxpool: bool = False
    axis_name: str | None = None
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, tokens: jax.Array, train: bool) -> jax.Array:
        """Scores token maps.

        Args:
          tokens: (B, N, D) with N a perfect square; token r * sqrt(N) + c sits at grid (r, c).
          train: BatchNorm uses batch statistics (and updates `batch_stats` when that
            collection is mutable) if True, running averages if False.
        Returns: (B,) float32 logits.
        """
        batch, num_tokens, width = tokens.shape
        side = math.isqrt(num_tokens)
        if side * side != num_tokens:
            raise ValueError(f"Discriminator needs a square token grid, got N={num_tokens} tokens")
        x = tokens.reshape(batch, side, side, width)

        x = _conv(self.dtype)(64, (1, 1), padding="VALID", name="conv1")(x)
        x = nn.relu(_batch_norm(train, self.axis_name)(name="bn1")(x))
        if self.use_maxpool:
            x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=TORCH_PAD_3X3)
        for layer, (features, strides) in enumerate(((64, 1), (128, 2)), start=1):
            for i in range(2):
                x = BasicBlock(
                    features,
                    strides if i == 0 else 1,
                    self.axis_name,
                    self.dtype,
                    name=f"layer{layer}_{i}",
                )(x, train)
        x = jnp.mean(x.astype(jnp.float32), axis=(1, 2))
        # The logit feeds a BCE loss; a 128 -> 1 product costs nothing in float32.
        return nn.Dense(1, dtype=jnp.float32, name="fc")(x)[:, 0]
