"""SIGTERM as a request to stop at the next safe point, for every job that spends time.

TPU VMs and schedulers announce preemption with SIGTERM and kill the process a grace period
later. A job checks `requested()` where stopping loses nothing it cannot redo cheaply (between
training steps, sample chunks, classifier steps), and `wait` lets a long device computation be
abandoned as soon as the signal arrives. Either raises or returns into `Preempted`, which
`exits_cleanly` turns into one log line and exit status 0, so the scheduler's restart (or the
user's rerun of the same command) continues the job.

With several processes JAX's distributed runtime owns SIGTERM (a Python handler would take it
away), and every process must stop at the same safe point: `requested` then asks the runtime's
preemption sync point, with a counter that all processes advance in the same order, so only
the lock-step safe points may call it there.
"""

import contextlib
import itertools
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import jax
from absl import logging
from jax.experimental import multihost_utils

_signalled = threading.Event()
_safe_points = itertools.count()


class Preempted(Exception):
    """Raised at a safe point after SIGTERM; the message says what was saved."""


def install() -> None:
    """Catches SIGTERM from now on (one process; with several, JAX's runtime does)."""
    if jax.process_count() == 1:
        signal.signal(signal.SIGTERM, lambda *_: _signalled.set())


def requested() -> bool:
    """Whether the job should stop here. All processes of a multi-process job must call it at
    the same points in the same order (each call is a sync point there)."""
    if jax.process_count() > 1:
        return multihost_utils.reached_preemption_sync_point(next(_safe_points))
    return _signalled.is_set()


def check(saved: str) -> None:
    """Raises Preempted(saved) if the job should stop here; `saved` says what a rerun keeps."""
    if requested():
        raise Preempted(saved)


def wait(tree: Any, saved: str, poll_seconds: float = 0.05) -> Any:
    """`tree` once its arrays are computed, or Preempted(saved) as soon as SIGTERM arrives
    (one process). The computation is abandoned, not interrupted: the process exits."""
    if jax.process_count() == 1:
        leaves = [x for x in jax.tree.leaves(tree) if isinstance(x, jax.Array)]
        while not all(x.is_ready() for x in leaves):
            if _signalled.is_set():
                raise Preempted(saved)
            time.sleep(poll_seconds)
    return tree


@contextlib.contextmanager
def exits_cleanly(job: str) -> Iterator[None]:
    """Runs a job's body with SIGTERM caught; Preempted ends the process with one warning and
    status 0. Exit skips the interpreter's teardown, which would first wait for any device
    computation `wait` abandoned."""
    install()
    try:
        yield
    except Preempted as stop:
        logging.warning("%s preempted: %s; rerun the same command to continue", job, stop)
        logging.flush()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
