"""Checkpoints that are verified before they are trusted.

Orbax writes each step atomically, but a file damaged afterwards (a bad disk, a partial copy,
flipped bytes) restores without complaint or fails with a storage-level error. So every saved
step carries a checksum of each array of its TrainState (`digest.json` beside `state/`), and a
restore recomputes it. A step that fails to read or to verify is reported by path and reason,
and the newest good step is used instead; nothing is ever deleted. Training moves a bad step
aside (to `<workdir>/corrupt_checkpoints/`) so that it can save that step number again;
sampling and evaluation only skip it.

The checksum is two wrapping uint32 sums over each array's words, plain and position-weighted
by odd numbers (any single changed word changes the weighted sum), computed on the devices in
one jitted call, so verifying an XL state costs a pass over its memory rather than a host copy.
It detects corruption, not tampering.
"""

import contextlib
import logging as std_logging
import sys
import types
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp
from absl import logging
from etils import epath
from jax.experimental import multihost_utils

from sara_jax.io.errors import InputError

PyTree = Any
Digest = dict[str, list[int]]

ITEM = "digest"


@jax.jit
def _leaf_sums(tree: PyTree) -> PyTree:
    def sums(x: jax.Array) -> jax.Array:
        x = jnp.asarray(x)
        if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
            x = jax.random.key_data(x)
        words = x.reshape(-1)
        if words.dtype.itemsize == 4:
            words = jax.lax.bitcast_convert_type(words, jnp.uint32)
        elif words.dtype.itemsize == 2:
            words = jax.lax.bitcast_convert_type(words, jnp.uint16).astype(jnp.uint32)
        else:
            words = words.astype(jnp.uint32)  # bool and 1-byte types: their values are words.
        odd = jnp.arange(words.shape[0], dtype=jnp.uint32) * 2 + 1
        return jnp.stack([words.sum(dtype=jnp.uint32), (words * odd).sum(dtype=jnp.uint32)])

    return jax.tree.map(sums, tree)


def digest(state: PyTree) -> Digest:
    """{leaf path: [sum, weighted sum]} of every array of `state` (uint32, wrapping)."""
    sums = jax.device_get(_leaf_sums(state))
    flat, _ = jax.tree_util.tree_flatten_with_path(sums)
    return {jax.tree_util.keystr(path): [int(v) for v in value] for path, value in flat}


def save_args(state: PyTree, **items: ocp.args.CheckpointArgs) -> ocp.args.Composite:
    """The Composite a step is saved with: the state, its digest, and `items` (e.g. data)."""
    return ocp.args.Composite(
        state=ocp.args.StandardSave(state), **{ITEM: ocp.args.JsonSave(digest(state))}, **items
    )


def _mismatch(state: PyTree, expected: Digest) -> str | None:
    """Why `state` does not match `expected`, or None when it does."""
    actual = digest(state)
    if actual.keys() != expected.keys():
        return "its arrays are not those its digest lists"
    bad = [path for path in actual if actual[path] != expected[path]]
    if bad:
        return f"checksum mismatch in {len(bad)} array(s), e.g. {bad[0]}"
    return None


def restore_good(
    manager: ocp.CheckpointManager,
    abstract: PyTree,
    extra: Callable[[epath.Path], dict[str, ocp.args.CheckpointArgs]] = lambda _: {},
    move_bad_to: epath.Path | None = None,
    step: int | None = None,
) -> tuple[int, Any] | None:
    """The newest step of `manager` that reads and verifies, as (step, restored Composite).

    Args:
      abstract: the TrainState's shapes, dtypes and shardings (restored as `state`).
      extra: step directory -> more items to restore with it (e.g. the data iterator).
      move_bad_to: where bad steps are moved (training); None leaves them in place.
      step: that step only (sampling an earlier checkpoint), not the newest good one.
    Returns:
      None when `manager` holds no step.
    Raises:
      InputError: every step tried is bad; the message lists each with its reason. Or `step`
        is not among the manager's steps, which it lists.
    """
    steps = sorted(manager.all_steps(), reverse=True)
    if step is not None and steps:
        if step not in steps:
            listed = ", ".join(map(str, sorted(steps)))
            where = manager.directory
            raise InputError(f"no checkpoint step {step} under {where}; it holds {listed}")
        steps = [step]
    quiet_abandoned_reads()  # Before: a bad step's reads start dying before its error returns.
    bad = []
    for tried in steps:
        step_dir = ocp.step.find_step_path(
            manager.directory, ocp.step.standard_name_format(), step=tried
        )
        items = {"state": ocp.args.StandardRestore(abstract), **extra(step_dir)}
        has_digest = (step_dir / ITEM).exists()
        if has_digest:
            items[ITEM] = ocp.args.JsonRestore()
        try:
            restored = manager.restore(tried, args=ocp.args.Composite(**items))
            reason = _mismatch(restored.state, restored[ITEM]) if has_digest else None
        except Exception as err:  # noqa: BLE001 - any failure to read makes the step bad.
            restored, reason = None, f"unreadable ({type(err).__name__}: {_first_line(err)})"
        if reason is None:
            if not has_digest:
                logging.warning(
                    "checkpoint %s has no digest (older run or converted): restored unverified",
                    step_dir,
                )
            if bad:
                logging.warning("using step %d, the newest good one", tried)
            return tried, restored
        logging.error("checkpoint %s is bad: %s; skipping it", step_dir, reason)
        bad.append(f"{step_dir}: {reason}")
        if move_bad_to is not None:
            _move_aside(step_dir, move_bad_to)
            manager.reload()
    if not bad:
        return None
    # A fault of the files, not of the program: one line (io/cli.run), each step's own error
    # line above it.
    raise InputError(
        f"no good checkpoint: every step failed to read or verify ({'; '.join(bad)}); restore "
        "them from a copy, or train afresh (`sara_jax.main --start_afresh`, or another --workdir)"
    )


def quiet_abandoned_reads() -> None:
    """Moves to the log at -v 1 what orbax's abandoned reads of a bad step report as they die
    in the background, after the one line naming the step. They report by two routes: through
    sys.unraisablehook, each pending read coroutine its TensorStore error ("Exception ignored
    in: <coroutine ...>" with the whole store spec) and each TensorStore callback that finds
    asyncio's loop closed ("RuntimeError: Event loop is closed"); and through asyncio's logger,
    each read task, gather or future whose error nobody awaited ("Task/Future exception was
    never retrieved", when the loop is still open). One truncated file gave 23,000 lines of
    them. Only those are diverted; any other report goes where it went. Installed once, for
    the rest of the process: the reports also come after the restore returns."""
    if getattr(sys.unraisablehook, "_sara_jax", False):
        return
    # Bound now: the reports may come while the interpreter shuts down and module globals are
    # gone, and a hook that raises makes Python print the report after all.
    default, coroutine, vlog, first_line, suppress = (
        sys.unraisablehook,
        types.CoroutineType,
        logging.vlog,
        _first_line,
        contextlib.suppress,
    )

    def quiet(report: Any) -> None:
        try:
            code = getattr(report.object, "cr_code", None)
            read = isinstance(report.object, coroutine) and "orbax" in code.co_filename
            closed = isinstance(report.exc_value, RuntimeError) and (
                str(report.exc_value) == "Event loop is closed"
            )
        except Exception:  # noqa: BLE001 - never raise from the hook.
            read = closed = False
        if not (read or closed):
            default(report)
            return
        with suppress(Exception):  # Logging torn down at exit: the report is dropped.
            vlog(1, "abandoned checkpoint read: %s", first_line(report.exc_value))

    def unretrieved(record: std_logging.LogRecord) -> bool:
        """False (dropped, after a -v 1 line) for asyncio's report of a checkpoint read's error:
        one raised through orbax's code, or one TensorStore set on a future directly (no Python
        frames), which names the OCDBT store it failed to read."""
        err = record.exc_info[1] if record.exc_info else None
        if err is None or "never retrieved" not in str(record.msg):
            return True
        if not (_raised_in_orbax(err) or _names_a_store(err)):
            return True
        with suppress(Exception):
            vlog(1, "abandoned checkpoint read: %s", first_line(err))
        return False

    quiet._sara_jax = True
    sys.unraisablehook = quiet
    std_logging.getLogger("asyncio").addFilter(unretrieved)


def _names_a_store(err: BaseException) -> bool:
    """Whether `err` is TensorStore's error reading a checkpoint's OCDBT store."""
    return "in OCDBT database at" in str(err)


def _raised_in_orbax(err: BaseException) -> bool:
    """Whether `err` or an exception it was raised from passed through orbax's code."""
    seen = set()
    while err is not None and id(err) not in seen:  # A chain may loop back on itself.
        seen.add(id(err))
        tb = err.__traceback__
        while tb is not None:
            if "orbax" in tb.tb_frame.f_code.co_filename:
                return True
            tb = tb.tb_next
        err = err.__cause__ or err.__context__
    return False


def _first_line(err: Exception) -> str:
    # orbax appends the whole TensorStore spec, dozens of lines, to a failed read's error.
    text = str(err).split(" See full TensorStore details")[0]
    return (text.strip().splitlines() or [""])[0][:300]


def _move_aside(step_dir: epath.Path, to: epath.Path) -> None:
    """Moves a bad step out of the checkpoint directory, keeping it (process 0 moves, all
    wait), so the run can save that step number again."""
    if jax.process_index() == 0:
        to.mkdir(parents=True, exist_ok=True)
        target, n = to / step_dir.name, 1
        while target.exists():
            target, n = to / f"{step_dir.name}.{n}", n + 1
        step_dir.rename(target)
        logging.warning("moved bad checkpoint %s to %s (kept, not deleted)", step_dir, target)
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(f"moved bad checkpoint {step_dir.name}")


# What a run leaves in its workdir besides checkpoints: a sign that one ran there.
RUN_TRACES = ("config.json", "events.out.tfevents.*", "corrupt_checkpoints")


def previous_run_without_checkpoints(workdir: epath.Path) -> list[str]:
    """What `workdir` holds of a previous run (RUN_TRACES) when it holds no checkpoint step;
    [] when it holds a step (a resume) or nothing of a run (a fresh start)."""
    steps = workdir / "checkpoints"
    if steps.exists() and any(p.name.isdigit() for p in steps.iterdir()):
        return []
    return sorted({p.name for pattern in RUN_TRACES for p in workdir.glob(pattern)})
