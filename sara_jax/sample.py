"""Samples from a trained model for evaluation: `python -m sara_jax.sample --config=...
--workdir=RUN` writes RUN/samples_<step>/samples.npz (ADM layout: uint8 NHWC `arr_0`, labels
`arr_1`) and a PNG grid of the first 64.

Sample i is a function of (sample.seed, i) alone: its label (uniform or i % classes), its
noise and its SDE noise. The set is cut into chunks of `sample.batch_size`; process p of P
draws chunks p, p + P, ... on its local devices and saves each atomically, and a re-run skips
the chunks already saved. So a killed run continues without duplicates or gaps, and the result
does not depend on the number of devices, hosts or interruptions. Whoever saves the last chunk
assembles samples.npz.

SIGTERM (a preemption notice) ends the job at its next safe point with one warning line and
exit status 0, the chunks saved so far kept: at once with one process (the chunk being drawn is
abandoned), after the current round of chunks with several (`sampling/sample_set.py`).
"""

import jax
from absl import app, flags

from sara_jax.io import cli, preemption
from sara_jax.sampling import sample_set


def main(argv: list[str]) -> None:
    config = cli.start(argv)  # First: the process count decides who takes SIGTERM.
    with preemption.exits_cleanly("sampling"):
        sample_set.sample_set(config, flags.FLAGS.workdir, jax.process_index(), jax.process_count())


if __name__ == "__main__":
    cli.define_flags()
    flags.DEFINE_string("workdir", None, "The training run's workdir (its checkpoints/).")
    flags.mark_flags_as_required(["workdir"])
    app.run(main)
