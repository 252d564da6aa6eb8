"""The one attention kernel of the SiT and the ViT encoders: cuDNN's fused flash attention on
GPU, XLA's softmax(QK^T / sqrt(d)) V elsewhere.

`jax.nn.dot_product_attention` picks XLA unless told otherwise; on a GPU the cuDNN kernel never
writes the (T, T) logits to memory, which is most of an XLA attention's time and memory at
SiT-XL/2's 256 tokens (and more at 512 px). cuDNN takes half-precision inputs and head
dimensions that are multiples of 8 (SiT-XL/2: 72, ViT-B: 64); its remaining conditions depend on
the cuDNN version and the GPU, which JAX checks while tracing, so a call it rejects falls back to
XLA rather than repeating those rules here.
"""

import jax
import jax.numpy as jnp
from absl import logging

CUDNN_DTYPES = (jnp.bfloat16, jnp.float16)


def target_platform() -> str:
    """The platform the traced code is compiled for: the mesh's inside `shard_map` (which is
    also right when compiling ahead of time for a machine that is not this one, see
    benchmarks/train_step.py --target), else JAX's default backend."""
    device = jax.sharding.get_abstract_mesh().abstract_device
    return jax.default_backend() if device is None else device.platform


def attention(q: jax.Array, k: jax.Array, v: jax.Array) -> jax.Array:
    """Multi-head softmax(q k^T / sqrt(head_dim)) v, no mask.

    Args:
      q, k, v: (B, T, heads, head_dim), one dtype.
    Returns: (B, T, heads, head_dim) in that dtype. Logits and softmax are float32 on both
      paths (cuDNN accumulates in float32; XLA's path upcasts), even for bf16 inputs.
    """
    if target_platform() == "gpu" and q.dtype in CUDNN_DTYPES:
        try:
            return jax.nn.dot_product_attention(q, k, v, implementation="cudnn")
        except (NotImplementedError, ValueError, RuntimeError) as e:
            logging.log_first_n(
                logging.WARNING, "cuDNN attention unavailable (%s); using XLA's", 1, e
            )
    return jax.nn.dot_product_attention(q, k, v, implementation="xla")
