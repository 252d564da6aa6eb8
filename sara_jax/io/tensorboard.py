"""A run's metrics as console lines and TensorBoard event files, without TensorFlow.

`create_writer` stands in for `clu.metric_writers.create_default_writer`, whose package imports
TensorFlow (1.3 GB installed, seconds to import) only to write event files. The backend is
tensorboardX: a maintained, pure-Python writer of TensorBoard's own formats that never imports
TensorFlow, whatever else is installed. TensorBoard's own `EventFileWriter` would be the other
choice, but it goes through `tensorboard.compat.tf`, which imports TensorFlow whenever it is
installed, and without TensorFlow it appends each record through fsspec, which gcsfs turns into
overwriting the gs:// file. tensorboardX imports torch when torch is installed (the `test`
extra): seconds once per process, still less than TensorFlow.

What the files hold, as TensorBoard reads them back (`EventFileLoader` converts these
long-standing forms on load): scalars as the "scalars" plugin (float32), each image as the
"images" plugin, hyperparameters as the "hparams" plugin's session start (TensorBoard infers the
experiment from it, as for clu's writer).

A gs:// workdir needs google-cloud-storage (the `gcs` extra, docs/install.md): tensorboardX
keeps the event file in memory and uploads it whole at each flush, so this writer flushes a
gs:// file at most every `GCS_FLUSH_SECONDS` (and at `flush`/`close`), and a local one after
every write.
"""

import itertools
import os
import time
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
from absl import logging
from tensorboardX import record_writer, summary
from tensorboardX.event_file_writer import EventsWriter
from tensorboardX.proto import event_pb2

# TF's writer also flushes every two minutes; each flush of a gs:// file re-uploads all of it.
GCS_FLUSH_SECONDS = 120.0

# Event file names hold the creation second and the host: two writers of one process in the
# same second and directory would otherwise truncate each other's file.
_writer_ids = itertools.count()


def _python_number(value: Any) -> int | float | bool:
    """A Python number from a Python, numpy or jax scalar (0-d or 1-element array)."""
    return np.asarray(value).item()


def _flat_hparams(hparams: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted name, bool | int | float | str) of every leaf, as clu flattens hyperparameters:
    nested mappings (a ConfigDict too) joined with dots, sequences indexed, None as ""."""
    for key, value in hparams.items():
        name = f"{prefix}{key}"
        if hasattr(value, "items"):
            yield from _flat_hparams(value, f"{name}.")
        elif isinstance(value, list | tuple):
            yield from _flat_hparams(dict(enumerate(value)), f"{name}.")
        elif value is None:
            yield name, ""
        elif isinstance(value, np.generic):
            yield name, value.item()
        elif isinstance(value, bool | int | float | str):
            yield name, value
        else:  # The hparams plugin knows only the types above.
            yield name, str(value)


class MetricWriter:
    """clu's MetricWriter methods (`write_scalars`, `write_images`, `write_hparams`, `flush`,
    `close`): scalars and images are logged through absl, and with `logdir` every write also
    goes to an event file there.

    Args:
      logdir: str, a local or gs:// directory for the event file (created if missing); None
        for console lines only.
    """

    def __init__(self, logdir: str | None):
        self._events = None
        if logdir is None:
            return
        # tensorboardX's own error names the package, not how to get it, and comes late.
        if logdir.startswith("gs://") and not record_writer.GCS_ENABLED:
            raise ImportError(
                f"writing TensorBoard events to {logdir} needs google-cloud-storage: "
                "pip install -e '.[gcs]' (docs/install.md)"
            )
        record_writer.directory_check(logdir)
        suffix = f".{os.getpid()}.{next(_writer_ids)}"
        # tensorboardX's FileWriter hands events to a thread and its flush does not wait for
        # them; the synchronous EventsWriter under it makes `flush` mean what it says.
        self._events = EventsWriter(os.path.join(logdir, "events"), suffix)
        self._flush_seconds = GCS_FLUSH_SECONDS if "://" in logdir else 0.0
        self._flushed_at = time.monotonic()

    def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
        """Logs `[step] name=value, ...` (sorted by name) and writes each value as a scalar.

        Args:
          step: int, the training step.
          scalars: name -> number (Python, numpy or jax scalar).
        """
        numbers = {name: _python_number(value) for name, value in scalars.items()}
        shown = [
            f"{name}={value:.6g}" if isinstance(value, float) else f"{name}={value}"
            for name, value in sorted(numbers.items())
        ]
        logging.info("[%d] %s", step, ", ".join(shown))
        for name, value in numbers.items():
            self._write(step, summary.scalar(name, float(value)))

    def write_images(self, step: int, images: Mapping[str, Any]) -> None:
        """Writes each image as a PNG; a batch of N > 1 under `name/0` ... `name/N-1`.

        Args:
          step: int, the training step.
          images: name -> uint8 (N, H, W, C) or (H, W, C), C in {1, 3, 4} (floats: [0, 1]).
        """
        arrays = {name: np.asarray(value) for name, value in images.items()}
        logging.info("[%d] Got images: %s.", step, {k: v.shape for k, v in arrays.items()})
        for name, array in arrays.items():
            batch = array[None] if array.ndim == 3 else array
            for i, image in enumerate(batch):
                tag = name if len(batch) == 1 else f"{name}/{i}"
                self._write(step, summary.image(tag, image, dataformats="HWC"))

    def write_hparams(self, hparams: Mapping[str, Any]) -> None:
        """Writes the run's hyperparameters (nested mappings and sequences flattened to dotted
        names) for TensorBoard's HPARAMS tab.

        Args:
          hparams: name -> value, or nested mappings (e.g. a ConfigDict) of them.
        """
        # Not logged, unlike clu's writer: a run prints its config, shorter, itself.
        flat = dict(_flat_hparams(hparams))
        # No metrics named: TensorBoard then offers every scalar tag, as for clu's writer.
        _, session_start, _ = summary.hparams(flat, {})
        self._write(0, session_start)

    def flush(self) -> None:
        """Puts everything written so far in the event file (uploads it, for gs://)."""
        if self._events is not None:
            self._events.flush()
            self._flushed_at = time.monotonic()
        logging.flush()

    def close(self) -> None:
        """Flushes and closes the event file; later writes only log."""
        self.flush()
        if self._events is not None:
            self._events.close()
            self._events = None

    def _write(self, step: int, summary_proto: Any) -> None:
        """One event holding `summary_proto` (a tensorboardX Summary) at `step`."""
        if self._events is None:
            return
        event = event_pb2.Event(wall_time=time.time(), step=int(step), summary=summary_proto)
        self._events.write_event(event)
        if time.monotonic() - self._flushed_at >= self._flush_seconds:
            self.flush()


def create_writer(workdir: str | os.PathLike, just_logging: bool) -> MetricWriter:
    """The run's metric writer, as `clu.metric_writers.create_default_writer(workdir,
    just_logging=just_logging)` made it: console lines through absl logging and, unless
    `just_logging` (the processes other than 0 of a multi-host run), an event file in `workdir`.

    Args:
      workdir: str | os.PathLike, a local or gs:// directory (gs:// needs the `gcs` extra).
      just_logging: bool, True to write no event file.

    Returns:
      MetricWriter; `close()` it when done.
    """
    return MetricWriter(None if just_logging else os.fspath(workdir))
