"""Verified checkpoints: a damaged step is named and skipped for the newest good one."""

import logging as pylogging

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from sara_jax.io.errors import InputError
from sara_jax.training import checkpoints


def state_at(step: int) -> dict:
    key = jax.random.key(step)
    return {
        "step": jnp.asarray(step, jnp.int32),
        "params": {"w": jax.random.normal(key, (64, 256)), "b": jnp.full((7,), step, jnp.float32)},
        "low": jnp.arange(5, dtype=jnp.bfloat16),
    }


def save_steps(directory, steps):
    with ocp.CheckpointManager(directory) as manager:
        for step in steps:
            manager.save(step, args=checkpoints.save_args(state_at(step)))
        manager.wait_until_finished()


def restore(directory, move_bad_to=None, step=None):
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state_at(0))
    with ocp.CheckpointManager(directory) as manager:
        return checkpoints.restore_good(manager, abstract, move_bad_to=move_bad_to, step=step)


def largest_file(step_dir):
    return max(
        (p for p in (step_dir / "state").rglob("*") if p.is_file()), key=lambda p: p.stat().st_size
    )


def flip_bytes(path, count=16):
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    for i in range(middle, middle + count):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def test_digest_changes_with_any_word_and_not_otherwise():
    state = state_at(3)
    before = checkpoints.digest(state)
    assert before == checkpoints.digest(jax.tree.map(jnp.copy, state))
    flipped = state | {"params": state["params"] | {"w": state["params"]["w"].at[10, 3].set(1e30)}}
    after = checkpoints.digest(flipped)
    assert [k for k in before if before[k] != after[k]] == ["['params']['w']"]
    # Swapping two words keeps the plain sum and changes the weighted one.
    w = state["params"]["w"].reshape(-1)
    swapped = state | {
        "params": state["params"] | {"w": w.at[0].set(w[1]).at[1].set(w[0]).reshape(64, 256)}
    }
    s0, s1 = before["['params']['w']"], checkpoints.digest(swapped)["['params']['w']"]
    assert s0[0] == s1[0] and s0[1] != s1[1]


def test_restore_uses_the_newest_step_when_all_are_good(tmp_path):
    save_steps(tmp_path / "ckpt", [1, 2])
    step, restored = restore(tmp_path / "ckpt")
    assert step == 2
    np.testing.assert_array_equal(restored.state["params"]["w"], state_at(2)["params"]["w"])


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_a_damaged_latest_step_is_named_skipped_and_moved_aside(tmp_path, caplog, damage):
    save_steps(tmp_path / "ckpt", [1, 2])
    target = largest_file(tmp_path / "ckpt" / "2")
    size = target.stat().st_size
    if damage == "flip":
        flip_bytes(target)
        assert target.stat().st_size == size
    else:
        target.write_bytes(target.read_bytes()[: size // 2])
    with caplog.at_level(pylogging.WARNING):
        step, restored = restore(tmp_path / "ckpt", move_bad_to=tmp_path / "bad")
    assert step == 1
    np.testing.assert_array_equal(restored.state["params"]["w"], state_at(1)["params"]["w"])
    errors = [r.getMessage() for r in caplog.records if r.levelno == pylogging.ERROR]
    assert len(errors) == 1 and str(tmp_path / "ckpt" / "2") in errors[0]
    assert ("checksum mismatch" if damage == "flip" else "unreadable") in errors[0]
    # Kept, out of the way of the next save of step 2.
    assert not (tmp_path / "ckpt" / "2").exists() and (tmp_path / "bad" / "2" / "state").is_dir()
    save_steps(tmp_path / "ckpt", [2])
    assert restore(tmp_path / "ckpt")[0] == 2


def test_a_chosen_step_is_restored_and_never_another(tmp_path):
    save_steps(tmp_path / "ckpt", [1, 2, 3])
    step, restored = restore(tmp_path / "ckpt", step=2)
    assert step == 2
    np.testing.assert_array_equal(restored.state["params"]["w"], state_at(2)["params"]["w"])
    with pytest.raises(InputError, match="no checkpoint step 5 under .*; it holds 1, 2, 3"):
        restore(tmp_path / "ckpt", step=5)
    # A bad chosen step is an error, not a silent fallback to a neighbour.
    flip_bytes(largest_file(tmp_path / "ckpt" / "1"))
    with pytest.raises(InputError, match="no good checkpoint"):
        restore(tmp_path / "ckpt", step=1)


def test_skipping_without_moving_leaves_the_bad_step(tmp_path):
    save_steps(tmp_path / "ckpt", [1, 2])
    flip_bytes(largest_file(tmp_path / "ckpt" / "2"))
    assert restore(tmp_path / "ckpt")[0] == 1
    assert (tmp_path / "ckpt" / "2").is_dir()


def test_no_good_step_is_a_clear_error_listing_each(tmp_path):
    save_steps(tmp_path / "ckpt", [1, 2])
    for step in (1, 2):
        flip_bytes(largest_file(tmp_path / "ckpt" / str(step)))
    with pytest.raises(InputError, match="no good checkpoint") as error:
        restore(tmp_path / "ckpt")
    assert str(tmp_path / "ckpt" / "1") in str(error.value)
    assert str(tmp_path / "ckpt" / "2") in str(error.value)


def test_an_empty_directory_has_nothing_to_restore(tmp_path):
    assert restore(tmp_path / "ckpt") is None


def test_a_step_without_digest_restores_with_a_warning(tmp_path, caplog):
    with ocp.CheckpointManager(tmp_path / "ckpt") as manager:
        manager.save(1, args=ocp.args.Composite(state=ocp.args.StandardSave(state_at(1))))
    with caplog.at_level(pylogging.WARNING):
        assert restore(tmp_path / "ckpt")[0] == 1
    assert any("unverified" in r.getMessage() for r in caplog.records)


def raised_in(filename: str) -> Exception:
    """An exception whose traceback passes through code compiled as `filename`, raised from a
    ValueError as orbax's read errors are."""
    code = compile("def read():\n    raise ValueError('OUT_OF_RANGE')\n", filename, "exec")
    scope: dict = {}
    exec(code, scope)
    try:
        try:
            scope["read"]()
        except ValueError as cause:
            raise Exception("Encountered error while reading array index") from cause
    except Exception as err:  # noqa: BLE001
        return err


# TensorStore's own error, set on a future with no Python frames (as a CI log showed it).
STORE_ERROR = ValueError(
    'OUT_OF_RANGE: Error reading "ema_params.sit.blocks_0.mlp.fc1.kernel/7.0" in OCDBT database '
    'at local file "/run/checkpoints/4/state/": Requested byte range [4489891, 4491835) is not '
    "valid for value of size 2424832"
)


@pytest.mark.parametrize(
    "where, dropped",
    [("/site-packages/orbax/x.py", True), ("/app.py", False), ("tensorstore", True)],
)
def test_asyncio_reports_of_dead_orbax_reads_are_dropped_and_others_kept(where, dropped):
    checkpoints.quiet_abandoned_reads()
    err = STORE_ERROR if where == "tensorstore" else raised_in(where)
    record = pylogging.LogRecord(
        "asyncio", pylogging.ERROR, "base_events.py", 1, "Task exception was never retrieved",
        None, (type(err), err, err.__traceback__),
    )  # fmt: skip
    assert bool(pylogging.getLogger("asyncio").filter(record)) is not dropped
    other = pylogging.LogRecord(
        "asyncio", pylogging.ERROR, "x", 1, "Unclosed client session", None,
        (type(err), err, err.__traceback__),
    )  # fmt: skip
    assert bool(pylogging.getLogger("asyncio").filter(other))
