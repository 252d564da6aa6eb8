"""sara_jax.models.attention: the formula on CPU, and which implementation each case asks for.

cuDNN itself needs a GPU; its parity with XLA is JAX's to test. Here a spy on
`jax.nn.dot_product_attention` checks the choice: cuDNN for half precision on a GPU backend,
XLA otherwise or when cuDNN rejects the call.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from sara_jax.models import attention as attention_module
from sara_jax.models.attention import attention


def qkv(dtype=jnp.float32, shape=(2, 7, 3, 8)):
    keys = jax.random.split(jax.random.key(0), 3)
    return [jax.random.normal(k, shape).astype(dtype) for k in keys]


def reference(q, k, v) -> np.ndarray:
    """softmax(q k^T / sqrt(d)) v per head, in float64."""
    q, k, v = (np.asarray(x, np.float64) for x in (q, k, v))
    logits = np.einsum("bthd,bshd->bhts", q, k) / np.sqrt(q.shape[-1])
    weights = np.exp(logits - logits.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    return np.einsum("bhts,bshd->bthd", weights, v)


def test_cpu_attention_is_the_softmax_formula():
    q, k, v = qkv()
    out = attention(q, k, v)
    assert out.shape == q.shape and out.dtype == jnp.float32
    np.testing.assert_allclose(out, reference(q, k, v), rtol=1e-5, atol=1e-6)


def test_bf16_attention_keeps_its_dtype_and_float32_softmax():
    q, k, v = qkv(jnp.bfloat16)
    out = attention(q, k, v)
    assert out.dtype == jnp.bfloat16
    # bf16 inputs and output: ~3 significant digits, the softmax itself is float32.
    np.testing.assert_allclose(np.float32(out), reference(q, k, v), atol=2e-2)


@pytest.fixture
def spy(monkeypatch):
    """Records the `implementation` of every dot_product_attention call; a call asking for
    cuDNN raises as cuDNN does when it cannot run the inputs."""
    calls = []
    real = jax.nn.dot_product_attention

    def fake(q, k, v, implementation=None):
        calls.append(implementation)
        if implementation == "cudnn":
            raise NotImplementedError("no cuDNN kernel here")
        return real(q, k, v, implementation=implementation)

    monkeypatch.setattr(jax.nn, "dot_product_attention", fake)
    return calls


@pytest.mark.parametrize(
    "backend, dtype, tried",
    [
        ("gpu", jnp.bfloat16, ["cudnn", "xla"]),
        ("gpu", jnp.float16, ["cudnn", "xla"]),
        ("gpu", jnp.float32, ["xla"]),
        ("cpu", jnp.bfloat16, ["xla"]),
        ("tpu", jnp.bfloat16, ["xla"]),
    ],
)
def test_cudnn_is_tried_for_half_precision_on_gpu_only(monkeypatch, spy, backend, dtype, tried):
    monkeypatch.setattr(attention_module.jax, "default_backend", lambda: backend)
    q, k, v = qkv(dtype)
    out = attention(q, k, v)
    assert spy == tried
    # Whatever was tried, the result is XLA's (cuDNN "failed" here).
    np.testing.assert_array_equal(out, jax.nn.dot_product_attention(q, k, v))


def test_the_mesh_being_compiled_for_decides_not_the_default_backend(monkeypatch, spy):
    """Inside shard_map the mesh's platform counts (a CPU mesh here, however the default
    backend is named), which is what lets the step compile ahead of time for a GPU."""
    monkeypatch.setattr(attention_module.jax, "default_backend", lambda: "gpu")
    mesh = jax.make_mesh((1,), ("data",), devices=jax.devices()[:1])
    q, k, v = qkv(jnp.bfloat16)
    step = jax.shard_map(lambda q, k, v: attention(q, k, v), mesh=mesh, in_specs=P(), out_specs=P())
    jax.jit(step).lower(q, k, v)
    assert spy == ["xla"]
