"""Progress lines: the rate excludes the compiling first step and the pauses."""

from sara_jax.training.progress import Progress, clock_time


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_lines_start_after_the_first_interval_then_every_interval():
    clock = Clock()
    progress = Progress(num_steps=100, batch_size=8, first_seconds=4, every_seconds=60, clock=clock)
    clock.now = 70.0  # First step: compilation.
    assert progress.update(1) is None
    clock.now = 71.0
    assert progress.update(2) is None  # 1 s of steps: not yet a rate.
    clock.now = 74.0  # Two steps in 4 s.
    assert progress.update(3) == "step 3/100 (3.0%): 0.5 steps/s, 4 images/s, ETA 0:03:14"
    clock.now = 100.0
    assert progress.update(16) is None  # Shown 28 s ago.
    progress.pause(10.0)  # An evaluation.
    clock.now = 140.0  # 60 s of steps and 10 s of evaluation since step 1: 60 steps.
    assert progress.update(61) == "step 61/100 (61.0%): 1 steps/s, 8 images/s, ETA 0:00:39"
    clock.now = 141.0
    assert progress.update(100).startswith("step 100/100 (100.0%)")  # The last step always.


def test_clock_time():
    assert clock_time(0) == "0:00:00"
    assert clock_time(3725.4) == "1:02:05"
