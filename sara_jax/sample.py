"""Samples from a trained model for evaluation: `python -m sara_jax.sample --config=...
--workdir=RUN` (the newest good checkpoint; `--step=K` another) writes
RUN/samples_<step>_<method><steps>_cfg<scale>_<digest>/samples.npz (ADM layout: uint8 NHWC
`arr_0`, labels `arr_1`, and `record`: the settings that drew it) and a PNG grid of the first
64.

Sample i is a function of (sample.seed, i) and the checkpoint's params alone: its label
(uniform or i % classes), its noise and its SDE noise. The directory is named after every
setting that decides the samples (step, weights, sampler, seed, labels, image size, decoder,
architecture; its set.json lists them), so a rerun with the same settings continues the set and
one with other settings draws another. The set is saved in chunks named by the indices they
hold; process p of P draws the missing indices of cells p, p + P, ... of `sample.batch_size`
samples on its local devices and saves each chunk atomically. So a killed run continues, even
with another batch size, without duplicates or gaps, and the result does not depend on the
number of devices, hosts or interruptions. Whoever finds every index saved assembles
samples.npz.

SIGTERM (a preemption notice) ends the job at its next safe point with one warning line and
exit status 0, the chunks saved so far kept: at once with one process (the chunk being drawn is
abandoned), after the current round of cells with several (`sampling/sample_set.py`).
"""

import jax
from absl import flags

from sara_jax.io import cli, preemption
from sara_jax.sampling import sample_set


def main(argv: list[str]) -> None:
    config = cli.start(argv)  # First: the process count decides who takes SIGTERM.
    with preemption.exits_cleanly("sampling"):
        sample_set.sample_set(
            config,
            flags.FLAGS.workdir,
            jax.process_index(),
            jax.process_count(),
            step=flags.FLAGS.step or None,
        )


if __name__ == "__main__":
    cli.define_flags()
    flags.DEFINE_string("workdir", None, "The training run's workdir (its checkpoints/).")
    flags.DEFINE_integer(
        "step", 0, "The checkpoint step to sample (0: the newest good one), e.g. for a curve."
    )
    flags.mark_flags_as_required(["workdir"])
    cli.run(main)
