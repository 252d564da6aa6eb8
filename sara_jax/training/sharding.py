"""How the TrainState is laid out over the `data` mesh axis (`train.state_sharding`), and the
collectives the step uses to move it.

- "replicated": every device holds the whole state; gradients are all-reduced (`pmean`).
- "weight_update": the AdamW moments, the EMA and D's optimizer state are sharded; gradients
  are reduce-scattered, each device updates its slice of the parameters and of the EMA, and
  the new slices are all-gathered into replicated parameters (Xu et al. 2020, "Automatic
  Cross-Replica Sharding of Weight Update in Data-Parallel Training"). Same bytes on the wire
  as an all-reduce, 1/N of the optimizer's memory and work per device.
- "fsdp": the SiT's and projector's parameters are sharded too; the SiT gathers each block's
  just before using it, in the forward and again in the backward (`models.sit.SiT.gather`), and
  autodiff turns each gather into a reduce-scatter of its gradient.

A leaf is sharded along one of its own dimensions, the largest that the device count divides
(the first of equal ones). A leaf with no such dimension (scalars such as AdamW's count, a
vector of odd length) stays replicated: padding it would change its global shape, and the
global shapes are what makes a checkpoint readable by any layout and device count. D's
parameters and batch statistics stay replicated in every mode: D is some 0.5% of the state,
and its convolutions run on every step.
"""

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from sara_jax.config.sections import STATE_SHARDINGS

PyTree = Any
AXIS = "data"
MODES = STATE_SHARDINGS
# The TrainState fields each mode shards; the others stay replicated.
SHARDED_FIELDS = {
    "replicated": (),
    "weight_update": ("ema_params", "opt_state", "disc_opt_state"),
    "fsdp": ("params", "ema_params", "opt_state", "disc_opt_state"),
}


def data_mesh(devices: list[jax.Device] | None = None) -> Mesh:
    """A 1D mesh over `devices` (default: all) whose one axis, `data`, splits the batch.

    The axis is of Auto type: only shard_map names it, and arrays made outside the step (the
    sampler's noise, say) mix freely with the replicated state.
    """
    devices = jax.devices() if devices is None else devices
    return jax.make_mesh(
        (len(devices),), (AXIS,), axis_types=(jax.sharding.AxisType.Auto,), devices=devices
    )


def shard_axis(shape: tuple[int, ...], num_devices: int) -> int | None:
    """The dimension a leaf of `shape` is split along over `num_devices`: the largest one they
    divide (the first of equal ones), or None (kept replicated; always None on one device)."""
    if num_devices == 1:
        return None
    divisible = [axis for axis, size in enumerate(shape) if size % num_devices == 0]
    # max returns the first of equal sizes.
    return max(divisible, key=lambda axis: shape[axis]) if divisible else None


def leaf_spec(shape: tuple[int, ...], num_devices: int) -> P:
    """The PartitionSpec of a sharded leaf of `shape`: `data` on its `shard_axis`, or P()."""
    axis = shard_axis(shape, num_devices)
    return P() if axis is None else P(*[None] * axis, AXIS)


def tree_specs(tree: PyTree, num_devices: int, sharded: bool = True) -> PyTree:
    """`leaf_spec` of every leaf of `tree` (arrays or shape structs); all P() if not sharded."""
    return jax.tree.map(lambda x: leaf_spec(x.shape, num_devices) if sharded else P(), tree)


def state_specs(state: PyTree, mode: str, num_devices: int) -> PyTree:
    """The TrainState's PartitionSpecs under `mode` (a TrainState of P's)."""
    if mode not in MODES:
        raise ValueError(f"train.state_sharding must be one of {', '.join(MODES)}, got {mode!r}")
    return state.replace(
        **{
            f.name: tree_specs(getattr(state, f.name), num_devices, f.name in SHARDED_FIELDS[mode])
            for f in dataclasses.fields(state)
        }
    )


def state_shardings(state: PyTree, mode: str, mesh: Mesh) -> PyTree:
    """The TrainState's NamedShardings on `mesh` under `mode`."""
    specs = state_specs(state, mode, mesh.devices.size)
    return jax.tree.map(lambda s: NamedSharding(mesh, s), specs, is_leaf=is_spec)


def is_spec(x: Any) -> bool:
    """For `jax.tree.map(..., is_leaf=is_spec)` over trees of PartitionSpecs (tuples)."""
    return isinstance(x, P)


def _axis(spec: P) -> int | None:
    return None if spec == P() else len(spec) - 1


def reduce_gradients(grads: PyTree, specs: PyTree, scattered: bool = False) -> PyTree:
    """Averages per-device gradients over `data`: a sharded leaf is reduce-scattered (each
    device keeps the mean of its slice), a replicated one all-reduced. Inside shard_map.

    scattered: the sharded leaves are already reduce-scattered sums (the gradients of
      `gather_for_compute`'s leaves): only divided by the device count.
    """

    def reduce(g: jax.Array, spec: P) -> jax.Array:
        axis = _axis(spec)
        if axis is None:
            return lax.pmean(g, AXIS)
        if not scattered:
            g = lax.psum_scatter(g, AXIS, scatter_dimension=axis, tiled=True)
        return g / lax.axis_size(AXIS)

    return jax.tree.map(reduce, grads, specs, is_leaf=is_spec)


def local_slice(tree: PyTree, specs: PyTree) -> PyTree:
    """This device's slice of each replicated leaf along its spec's axis. Inside shard_map."""

    def take(x: jax.Array, spec: P) -> jax.Array:
        axis = _axis(spec)
        if axis is None:
            return x
        size = x.shape[axis] // lax.axis_size(AXIS)
        return lax.dynamic_slice_in_dim(x, lax.axis_index(AXIS) * size, size, axis)

    return jax.tree.map(take, tree, specs, is_leaf=is_spec)


def gather(tree: PyTree, specs: PyTree) -> PyTree:
    """Whole leaves from their slices (all-gather along each spec's axis), the same on every
    device: the new replicated parameters of "weight_update". Inside shard_map."""

    def whole(x: jax.Array, spec: P) -> jax.Array:
        axis = _axis(spec)
        # "invarying" tells shard_map's replication check that every device has the result.
        return x if axis is None else lax.all_gather(x, AXIS, axis=axis, tiled=True, to="invarying")

    return jax.tree.map(whole, tree, specs, is_leaf=is_spec)


def per_device(tree: PyTree, specs: PyTree) -> PyTree:
    """Marks the replicated leaves as per-device values (their gradient is then the local one,
    averaged by `reduce_gradients`); the sharded ones already are. Inside shard_map."""
    return jax.tree.map(
        lambda x, s: lax.pcast(x, AXIS, to="varying") if _axis(s) is None else x,
        tree,
        specs,
        is_leaf=is_spec,
    )


def gather_for_compute(tree: PyTree, specs: PyTree, dtype: jnp.dtype | None = None) -> PyTree:
    """Whole leaves for a forward pass ("fsdp"), from this device's slices.

    Each slice is cast to `dtype` (the layers' compute dtype, which they would cast the whole
    to anyway) before the all-gather: half the bytes in bfloat16. The gradient of a leaf is
    reduce-scattered in the slice's own dtype (float32, not the compute dtype) and summed over
    devices; `reduce_gradients(..., scattered=True)` divides it. The SiT's remat policy
    (`models.sit.fsdp_saveable`) recognises these gathers. Inside shard_map.
    """

    def whole(x: jax.Array, spec: P) -> jax.Array:
        axis = _axis(spec)
        if axis is None:
            return x

        def cast_and_gather(x: jax.Array) -> jax.Array:
            return lax.all_gather(x.astype(dtype or x.dtype), AXIS, axis=axis, tiled=True)

        def backward(_, cotangent: jax.Array) -> tuple[jax.Array]:
            cotangent = cotangent.astype(x.dtype)
            return (lax.psum_scatter(cotangent, AXIS, scatter_dimension=axis, tiled=True),)

        gathered = jax.custom_vjp(cast_and_gather)
        gathered.defvjp(lambda x: (cast_and_gather(x), None), backward)
        return gathered(x)

    return jax.tree.map(whole, tree, specs, is_leaf=is_spec)


def global_norm(tree: PyTree, specs: PyTree) -> jax.Array:
    """The L2 norm of the whole tree whose sharded leaves are slices: their squared sums are
    added over `data`, the replicated leaves' counted once. Inside shard_map."""
    squares = jax.tree.map(lambda x: jnp.sum(jnp.square(x.astype(jnp.float32))), tree)
    flags = jax.tree.map(lambda s: _axis(s) is not None, specs, is_leaf=is_spec)
    pairs = list(zip(jax.tree.leaves(squares), jax.tree.leaves(flags), strict=True))
    sharded = sum((s for s, f in pairs if f), jnp.zeros(()))
    replicated = sum((s for s, f in pairs if not f), jnp.zeros(()))
    return jnp.sqrt(lax.psum(sharded, AXIS) + replicated)


def bytes_per_device(tree: PyTree) -> tuple[int, int]:
    """(bytes on one device, bytes of the whole) of a tree of placed jax.Arrays."""
    leaves = jax.tree.leaves(tree)
    local = sum(x.addressable_shards[0].data.nbytes for x in leaves)
    return local, sum(x.nbytes for x in leaves)


def replicated_fraction(tree: PyTree, num_devices: int) -> float:
    """The share of a tree's bytes that `leaf_spec` keeps replicated over `num_devices`."""
    sizes = [
        (np.prod(x.shape) * x.dtype.itemsize, shard_axis(x.shape, num_devices))
        for x in jax.tree.leaves(tree)
    ]
    whole = sum(size for size, _ in sizes)
    return float(sum(size for size, axis in sizes if axis is None) / whole) if whole else 0.0
