"""The state layouts' rules (training/sharding.py): which dimension a leaf is split along, which
TrainState fields each layout splits, and what stays replicated (the step: e2e)."""

import jax
import jax.numpy as jnp
import pytest
from jax.sharding import PartitionSpec as P

from sara_jax.config.sections import STATE_SHARDINGS
from sara_jax.training.sharding import (
    MODES,
    SHARDED_FIELDS,
    leaf_spec,
    replicated_fraction,
    shard_axis,
    state_specs,
)
from sara_jax.training.state import TrainState


@pytest.mark.parametrize(
    "shape, devices, axis",
    [
        ((1152, 4608), 8, 1),  # The largest dimension that divides.
        ((4608, 1152), 8, 0),
        ((1152, 3456), 256, None),  # Neither divides by 256: replicated.
        ((1001, 1152), 8, 1),  # The label table's 1001 rows do not divide.
        ((3, 3, 64, 64), 8, 2),  # Equal sizes: the first.
        ((), 8, None),  # Scalars (AdamW's count).
        ((4608,), 1, None),  # One device: nothing to split.
        ((16,), 16, 0),
    ],
)
def test_a_leaf_splits_along_its_largest_divisible_dimension(shape, devices, axis):
    assert shard_axis(shape, devices) == axis
    assert leaf_spec(shape, devices) == (P() if axis is None else P(*[None] * axis, "data"))


def tiny_state() -> TrainState:
    leaf = jax.ShapeDtypeStruct((16, 8), jnp.float32)
    return TrainState(
        step=jax.ShapeDtypeStruct((), jnp.int32),
        params={"w": leaf},
        ema_params={"w": leaf},
        disc={"params": {"w": leaf}},
        opt_state=({"mu": {"w": leaf}}, jax.ShapeDtypeStruct((), jnp.int32)),
        disc_opt_state=({"mu": {"w": leaf}},),
    )


@pytest.mark.parametrize("mode", MODES)
def test_each_layout_splits_its_fields_and_nothing_else(mode):
    specs = state_specs(tiny_state(), mode, 8)
    assert specs.step == P()
    for field in ("params", "ema_params", "disc", "opt_state", "disc_opt_state"):
        expected = P("data") if field in SHARDED_FIELDS[mode] else P()
        tree = getattr(specs, field)
        array_specs = [s for s in jax.tree.leaves(tree, is_leaf=lambda x: isinstance(x, P))]
        # AdamW's scalar count stays replicated wherever the moments are split.
        assert expected in array_specs and set(array_specs) <= {expected, P()}, field
    assert SHARDED_FIELDS["replicated"] == () and "disc" not in SHARDED_FIELDS["fsdp"]


def test_the_config_names_the_layouts_the_step_knows():
    assert STATE_SHARDINGS == MODES
    with pytest.raises(ValueError, match="train.state_sharding must be one of"):
        state_specs(tiny_state(), "zero3", 8)


def test_replicated_fraction_counts_the_bytes_no_dimension_splits():
    tree = {"a": jnp.zeros((8, 3)), "b": jnp.zeros((3,)), "c": jnp.zeros((), jnp.int32)}
    # 24 of 28 floats split over 8; 3 floats and one int32 stay whole: 16 of 112 bytes.
    assert replicated_fraction(tree, 8) == pytest.approx(16 / 112)
    assert replicated_fraction(tree, 1) == 1.0
