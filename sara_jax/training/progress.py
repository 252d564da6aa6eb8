"""Progress lines of a run: steps/s and time left, from the first step after compilation."""

import time
from collections.abc import Callable


def clock_time(seconds: float) -> str:
    """Seconds as h:mm:ss."""
    minutes, s = divmod(round(seconds), 60)
    return f"{minutes // 60}:{minutes % 60:02d}:{s:02d}"


class Progress:
    """Says how far a run is and when its training steps end.

    The first step's time includes compiling the step, so rates count from the end of the
    first step. The first line comes `first_seconds` later (steps are dispatched ahead of the
    device, so a rate over a step or two would count dispatches, not steps), then one every
    `every_seconds`. Time spent in evaluations and sample grids is excluded through `pause`
    (the ETA is for the steps).
    """

    def __init__(
        self,
        num_steps: int,
        batch_size: int,
        first_seconds: float = 10.0,
        every_seconds: float = 60.0,
        clock: Callable[[], float] = time.perf_counter,
    ):
        self._num_steps, self._batch = num_steps, batch_size
        self._first, self._every, self._clock = first_seconds, every_seconds, clock
        self._start: tuple[int, float] | None = None  # (step, time) the rate counts from.
        self._shown: float | None = None
        self._paused = 0.0

    def pause(self, seconds: float) -> None:
        """Excludes `seconds` (an evaluation) from the rate."""
        self._paused += seconds

    def update(self, done: int) -> str | None:
        """A progress line after step `done` finished, when one is due."""
        now = self._clock()
        if self._start is None:
            self._start, self._paused = (done, now), 0.0
            return None
        due = (
            now - self._start[1] >= self._first
            if self._shown is None
            else (now - self._shown >= self._every)
        )
        if not due and done < self._num_steps:
            return None
        self._shown = now
        steps = done - self._start[0]
        rate = steps / max(now - self._start[1] - self._paused, 1e-9)
        return (
            f"step {done}/{self._num_steps} ({100 * done / self._num_steps:.1f}%): "
            f"{rate:.3g} steps/s, {rate * self._batch:.4g} images/s, "
            f"ETA {clock_time((self._num_steps - done) / rate)}"
        )
