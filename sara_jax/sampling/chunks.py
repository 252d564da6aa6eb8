"""The chunk files of a sample set: chunk_<start>-<stop>.npz holds samples [start, stop).

A chunk is named by the indices it holds, not by its place in a run's batches, so runs with
different `sample.batch_size` (or process counts) continue one set: each draws only what no
chunk holds (`uncovered`). Each file is written whole (`files.write_npz`): one that exists is
complete.
"""

import re
from collections.abc import Iterable
from typing import Any

import numpy as np
from etils import epath

from sara_jax.io import files

_NAME = re.compile(r"chunk_(\d+)-(\d+)\.npz")


def name(start: int, stop: int) -> str:
    """The chunk file of samples [start, stop)."""
    return f"chunk_{start:07d}-{stop:07d}.npz"


def write(
    out: epath.Path, start: int, samples: np.ndarray, labels: np.ndarray, batch_size: int
) -> None:
    """Saves samples [start, start + len(samples)) in `out`: uint8 `samples` (n, H, W, 3),
    `labels` (n,), and the batch size they were drawn in (the compiled batch, padded)."""
    path = out / name(start, start + len(samples))
    files.write_npz(path, arr_0=samples, arr_1=labels, batch_size=np.asarray(batch_size))


def saved(out: epath.Path) -> dict[tuple[int, int], epath.Path]:
    """The chunk files in `out`, keyed by the (start, stop) their names give."""
    chunks = {}
    for path in out.iterdir():
        if match := _NAME.fullmatch(path.name):
            chunks[int(match[1]), int(match[2])] = path
    return chunks


def uncovered(start: int, stop: int, ranges: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """The parts of [start, stop) that none of the half-open `ranges` covers, in order."""
    gaps, at = [], start
    for a, b in sorted(ranges):
        if a >= stop:
            break
        if a > at:
            gaps.append((at, a))
        at = max(at, b)
    if at < stop:
        gaps.append((at, stop))
    return gaps


def _tiling(
    out: epath.Path, chunks: dict[tuple[int, int], epath.Path], num_samples: int
) -> list[tuple[int, int]]:
    """The (start, stop) of the chunks that hold [0, num_samples), in order: each index in
    exactly one, else a ValueError naming the gap or the overlapping files."""
    used, at = [], 0
    for a, b in sorted(chunks):
        if a >= num_samples:
            break
        if a < at:
            raise ValueError(f"{chunks[a, b]} overlaps {chunks[used[-1]].name} (index {a})")
        if a > at:
            break
        used.append((a, b))
        at = b
    if at < num_samples:
        raise ValueError(f"{out}: no chunk holds index {at} (of [0, {num_samples}))")
    return used


def read(out: epath.Path, num_samples: int) -> tuple[np.ndarray, np.ndarray, list[dict[str, Any]]]:
    """Samples [0, num_samples) of the chunks in `out`, in order.

    Returns: uint8 samples (N, H, W, 3), labels (N,), and the chunks read:
      [{"file", "start", "stop", "batch_size"}, ...] (the last one may be read only in part).
    Raises ValueError at a gap, an overlap, or a chunk whose arrays do not match its name.
    """
    chunks = saved(out)
    samples, labels, used = [], [], []
    for a, b in _tiling(out, chunks, num_samples):
        path = chunks[a, b]
        arrays = files.read_npz(path)
        counts = [len(arrays.get(k, ())) for k in ("arr_0", "arr_1")]
        if counts != [b - a] * 2 or "batch_size" not in arrays:
            raise ValueError(
                f"{path}: holds {counts[0]} samples and {counts[1]} labels"
                f"{'' if 'batch_size' in arrays else ' and no batch_size'}, but its name says "
                f"the {b - a} of indices [{a}, {b})"
            )
        take = min(b, num_samples) - a
        samples.append(arrays["arr_0"][:take])
        labels.append(arrays["arr_1"][:take])
        used.append({"file": path.name, "start": a, "stop": b})
        used[-1]["batch_size"] = int(arrays["batch_size"])
    return np.concatenate(samples), np.concatenate(labels), used
