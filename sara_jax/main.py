"""Entry point: `python -m sara_jax.main --config=configs/demo.py --workdir=DIR`.

Any config field can be overridden on the command line, e.g. `--config.optim.lr=2e-4`.
On a TPU pod or a multi-host GPU cluster, run the same command on every host with
`--distributed`: the mesh then spans the devices of all hosts and each host feeds its own
share of every global batch.
"""

import jax
from absl import flags, logging

from sara_jax.config import validate
from sara_jax.io import cli, preemption
from sara_jax.training import loop

_CONFIG = cli.define_config()
_WORKDIR = flags.DEFINE_string("workdir", None, "Where checkpoints, logs and samples go.")
_DISTRIBUTED = flags.DEFINE_bool(
    "distributed",
    False,
    "Call jax.distributed.initialize() first: one process per host. On TPU pods, SLURM and "
    "Open MPI the three flags below are found from the environment.",
)
_COORDINATOR = flags.DEFINE_string("coordinator_address", None, "host:port of process 0.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Number of processes.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index.")
_START_AFRESH = flags.DEFINE_bool(
    "start_afresh",
    False,
    "Train from step 0 in a workdir that holds a previous run but no good checkpoint (its "
    "files are kept); without it such a workdir is refused.",
)
flags.mark_flags_as_required(["config", "workdir"])


def main(argv: list[str]) -> None:
    cli.begin(argv)
    validate(_CONFIG.value)  # Here, so that a refused value is told before any device starts.
    if _DISTRIBUTED.value:
        jax.distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
    logging.info(
        "process %d of %d, %d local / %d global devices",
        jax.process_index(),
        jax.process_count(),
        jax.local_device_count(),
        jax.device_count(),
    )
    with preemption.exits_cleanly("training"):
        loop.train_and_evaluate(_CONFIG.value, _WORKDIR.value, _START_AFRESH.value)


if __name__ == "__main__":
    cli.run(main)
