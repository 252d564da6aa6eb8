"""The projector that maps SiT hidden states into the encoder's feature space (REPA's MLP)."""

import flax.linen as nn
import jax
import jax.numpy as jnp


class Projector(nn.Module):
    """Per-token 3-layer SiLU MLP: hidden -> width -> width -> z_dim.

    Attributes:
      width: inner width (2048 in REPA/SARA).
      z_dim: the encoder's feature size (768 for DINOv2-B).
      dtype: compute dtype of the matmuls; the output is float32 for the cosine losses.
    """

    width: int
    z_dim: int
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, h: jax.Array) -> jax.Array:
        """h: (B, N, hidden) -> h_den: (B, N, z_dim) float32."""
        for i, features in enumerate((self.width, self.width, self.z_dim)):
            if i:
                h = nn.silu(h)
            h = nn.Dense(
                features,
                kernel_init=nn.initializers.xavier_uniform(),
                dtype=self.dtype,
                name=f"fc{i + 1}",
            )(h)
        return h.astype(jnp.float32)
