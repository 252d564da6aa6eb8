"""train.state_sharding on 8 CPU devices: "weight_update" and "fsdp" take the same steps as
"replicated", hold 1/N of what they shard, gather the SiT's blocks where they are used, and
write checkpoints that any layout and device count continue."""

import re

import jax
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest
from helpers import STEP, random_encoder
from jax.extend import core
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
from test_main import run_main
from test_train_step_e2e import assert_trees_close, global_batch

from sara_jax.training import checkpoints
from sara_jax.training.sharding import (
    SHARDED_FIELDS,
    bytes_per_device,
    data_mesh,
    shard_axis,
    state_shardings,
)
from sara_jax.training.state import TrainState, build_models, create_train_state, restore_params
from sara_jax.training.step import make_train_step

# Adam's eps 1e-3 as in test_eight_devices_match_one_device: with 1e-8 float reduction-order
# noise on near-zero gradients turns into lr-sized steps. D every second step.
EXACT = {"optim.eps": 1e-3, "disc.optim.eps": 1e-3, "disc.every": 2}


class Run:
    """A state laid out as `mode` on the first `num_devices` devices and the step to train it."""

    def __init__(self, config, mode: str, num_devices: int):
        config = config.copy_and_resolve_references()
        config.train.state_sharding = mode
        self.mesh = data_mesh(jax.devices()[:num_devices])
        features, encoder_params = random_encoder()
        self.models = build_models(config, 16)
        self.abstract = jax.eval_shape(
            lambda: create_train_state(config, self.models, 16, jax.random.key(0))
        )
        self.layout = state_shardings(self.abstract, mode, self.mesh)
        self.batch = jax.device_put(global_batch(), NamedSharding(self.mesh, P("data")))
        self.encoder_params = jax.device_put(encoder_params, NamedSharding(self.mesh, P()))
        self.step = make_train_step(config, self.models, features, self.mesh)

    def fresh(self, config) -> TrainState:
        return jax.jit(
            lambda: create_train_state(config, self.models, 16, jax.random.key(0)),
            out_shardings=self.layout,
        )()

    def train(self, state: TrainState, num_steps: int) -> tuple[TrainState, list[dict]]:
        metrics = []
        for _ in range(num_steps):
            state, m = self.step(state, self.batch, self.encoder_params)
            metrics.append(jax.device_get(m))
        return state, metrics

    def restore(self, directory) -> TrainState:
        """The newest step of `directory`, restored straight into this run's layout."""
        target = jax.tree.map(
            lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
            self.abstract,
            self.layout,
        )
        manager = ocp.CheckpointManager(directory)
        _, restored = checkpoints.restore_good(manager, target)
        manager.close()
        return restored.state


def save(state: TrainState, directory) -> None:
    manager = ocp.CheckpointManager(directory)
    manager.save(int(state.step), args=checkpoints.save_args(state))
    manager.wait_until_finished()
    manager.close()


def trained(config, mode: str, num_devices: int, num_steps: int):
    run = Run(config, mode, num_devices)
    return run.train(run.fresh(config), num_steps)


REPLICATED = {}


@pytest.mark.parametrize("mode", ["weight_update", "fsdp"])
@pytest.mark.parametrize(
    "variant",
    [
        {},
        {"train.grad_accum_steps": 2},
        # Clipping on: the global norm of the whole gradient, not of a device's slices.
        {"optim.grad_clip": 0.05, "disc.optim.grad_clip": 0.05},
    ],
    ids=["plain", "accum2", "clipped"],
)
def test_layout_takes_the_steps_replicated_takes(mode, variant, tiny_config):
    config = tiny_config(STEP, **EXACT, **variant)
    key = tuple(sorted(variant.items()))
    if key not in REPLICATED:  # Both layouts compare with the same replicated run.
        REPLICATED[key] = trained(config, "replicated", 8, 3)
    expected_state, expected = REPLICATED[key]
    state, metrics = trained(config, mode, 8, 3)
    if "optim.grad_clip" in variant:
        assert all(m["grad_norm"] > 0.05 for m in expected), "clipping is not on"
    for m, e in zip(metrics, expected, strict=True):
        assert m.keys() == e.keys()
        # The metrics are pmean-ed scalars; the grad norm adds the squared slices over devices.
        assert_trees_close(m, e, rtol=2e-6, atol=1e-7)
    # Same arithmetic, other summation order (reduce-scatter vs all-reduce, per-slice norms):
    # float32 noise of a few ulp, far below the ~lr (5e-4) a layout bug moves a param by.
    assert_trees_close(jax.device_get(state), jax.device_get(expected_state), rtol=0, atol=2e-6)


@pytest.mark.parametrize("mode", ["weight_update", "fsdp"])
def test_a_sharded_leaf_holds_one_nth_per_device(mode, tiny_config):
    state, _ = trained(tiny_config(STEP), mode, 8, 1)
    for field in ("params", "ema_params", "disc", "opt_state", "disc_opt_state"):
        for leaf in jax.tree.leaves(getattr(state, field)):
            per_device = leaf.addressable_shards[0].data.nbytes
            split = field in SHARDED_FIELDS[mode] and shard_axis(leaf.shape, 8) is not None
            assert per_device == (leaf.nbytes // 8 if split else leaf.nbytes), (field, leaf.shape)
    local, whole = bytes_per_device(state.opt_state)
    assert local < whole / 7  # Nearly all of AdamW's moments are split.
    params_local, params_whole = bytes_per_device(state.params)
    assert (params_local < params_whole / 7) == (mode == "fsdp")


def all_gathers(jaxpr: core.Jaxpr) -> list[tuple[int, ...]]:
    """Output shapes of every all_gather in `jaxpr` and the jaxprs nested in it."""
    shapes = []
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "all_gather":
            shapes.append(tuple(eqn.outvars[0].aval.shape))
        for sub in core.jaxprs_in_params(eqn.params):
            shapes += all_gathers(sub)
    return shapes


def test_fsdp_gathers_each_block_in_the_forward_and_again_in_the_backward(tiny_config):
    config = tiny_config(STEP, **{"model.hidden_size": 48, "projector.width": 40})
    run = Run(config, "fsdp", 8)
    state = run.fresh(config)
    jaxpr = jax.make_jaxpr(run.step)(state, run.batch, run.encoder_params).jaxpr
    gathered = all_gathers(jaxpr)
    depth = config.model.depth
    # Each block's qkv kernel (48, 144) and MLP kernels (48, 192) / (192, 48): once per block
    # in the forward, once more in the backward (remat without them), never held in between.
    for shape in ((48, 144), (48, 192), (192, 48)):
        assert gathered.count(shape) == 2 * depth, (shape, gathered.count(shape))
    # The projector's first kernel (48, 40) is gathered once, outside the blocks.
    assert gathered.count((48, 40)) == 1


def test_checkpoints_move_between_layouts_and_device_counts(tmp_path, tiny_config):
    """8 devices fsdp -> 4 replicated -> 1 weight_update -> 2 fsdp continues as the run that
    never moved (8 devices, replicated), and sampling reads every step."""
    config = tiny_config(STEP, **EXACT)
    straight, _ = trained(config, "replicated", 8, 4)

    legs = [("fsdp", 8), ("replicated", 4), ("weight_update", 1), ("fsdp", 2)]
    state = None
    for i, (mode, num_devices) in enumerate(legs):
        run = Run(config, mode, num_devices)
        state = run.fresh(config) if state is None else run.restore(tmp_path / "checkpoints")
        assert int(state.step) == i
        for leaf, sharding in zip(jax.tree.leaves(state), jax.tree.leaves(run.layout), strict=True):
            assert leaf.sharding == sharding  # Restored in place: no detour via one device.
        state, _ = run.train(state, 1)
        save(state, tmp_path / "checkpoints")

    # Four reduction orders of one computation: float noise, not the ~lr of a wrong state.
    assert_trees_close(jax.device_get(state), jax.device_get(straight), rtol=0, atol=5e-6)
    params, step = restore_params(config, str(tmp_path), ema=True)
    assert step == 4
    assert_trees_close(params, jax.device_get(state.ema_params), rtol=0, atol=0)


def test_global_norm_of_slices_is_the_whole_norm(tiny_config):
    """The clipping norm under a sharded layout equals optax's norm of the whole tree."""
    from sara_jax.training import sharding

    config = tiny_config(STEP)
    run = Run(config, "fsdp", 8)
    params = run.fresh(config).params
    specs = sharding.state_specs(run.abstract, "fsdp", 8).params
    norm = jax.jit(
        jax.shard_map(
            lambda p: sharding.global_norm(p, specs),
            mesh=run.mesh,
            in_specs=(specs,),
            out_specs=P(),
        )
    )(params)
    np.testing.assert_allclose(norm, optax.tree.norm(jax.device_get(params)), rtol=1e-6)


def test_main_trains_fsdp_then_resumes_replicated_on_fewer_devices(tmp_path):
    """The CLI: 8 devices under fsdp (a preview grid drawn from the sharded EMA on the way),
    then the same workdir continued on 4 devices under replicated."""
    first = run_main(
        tmp_path,
        "--config.train.state_sharding=fsdp",
        "--config.train.num_steps=2",
        "--config.train.sample_every=1",
    )
    assert first.returncode == 0, first.stderr[-3000:]
    per_device = re.search(r"training state: ([\d.]+) GiB per device of ([\d.]+) GiB", first.stderr)
    assert float(per_device[1]) < float(per_device[2]) / 4, per_device[0]
    assert (tmp_path / "run" / "samples.png").exists()

    second = run_main(
        tmp_path,
        "--config.train.state_sharding=replicated",
        "--config.train.num_steps=3",
        devices=4,
    )
    assert second.returncode == 0, second.stderr[-3000:]
    assert "resumed from step 2" in second.stderr
    assert "(train.state_sharding=replicated, 4 devices)" in second.stderr
    assert (tmp_path / "run" / "checkpoints" / "3").is_dir()
