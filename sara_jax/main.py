"""Entry point: `python -m sara_jax.main --config=configs/demo.py --workdir=DIR`.

Any config field can be overridden on the command line, e.g. `--config.optim.lr=2e-4`.
"""

from absl import app, flags, logging
from ml_collections import config_flags

from sara_jax import train

_CONFIG = config_flags.DEFINE_config_file("config", None, "A configs/*.py file.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Where checkpoints, logs and samples go.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.info("config:\n%s", _CONFIG.value)
    train.train_and_evaluate(_CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
    app.run(main)
