"""What every command-line job does first (`sara_jax.preprocess`, `sara_jax.sample`)."""

import jax
import ml_collections
from absl import app, flags

from sara_jax.config import validate


def start(argv: list[str]) -> ml_collections.ConfigDict:
    """Rejects stray arguments, joins the other hosts under --distributed (one process per
    host), and returns the validated --config."""
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if flags.FLAGS.distributed:
        jax.distributed.initialize()
    config = flags.FLAGS.config
    validate(config)
    return config


def define_flags() -> None:
    """--config and --distributed; call only when running as a program, so job modules can
    be imported beside sara_jax.main (which defines --config too)."""
    from ml_collections import config_flags

    config_flags.DEFINE_config_file("config", None, "A configs/*.py file.")
    flags.DEFINE_bool(
        "distributed", False, "Call jax.distributed.initialize() first: one process per host."
    )
    flags.mark_flags_as_required(["config"])
