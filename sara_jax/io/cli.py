"""What every command-line job does first (`sara_jax.preprocess`, `sara_jax.sample`), and the
--config flag every command defines."""

import os
import sys

import jax
import ml_collections
from absl import app, flags
from ml_collections import config_flags

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


def define_config(help_text: str = "A configs/*.py file.") -> flags.FlagHolder:
    """--config, an ml_collections config file, checked as the flags are parsed: a file that
    does not exist ends the program with one line naming it, rather than a traceback from
    wherever the config is first read (ml_collections defers a load failure to then)."""
    holder = config_flags.DEFINE_config_file("config", None, help_text)
    flags.register_validator("config", _config_file_exists)
    return holder


def _config_file_exists(config: ml_collections.ConfigDict | None) -> bool:
    if config is None:  # Not given: mark_flags_as_required says so.
        return True
    try:
        config.keys()  # A config that failed to load raises here.
    except OSError:
        name = config_flags.get_config_filename(flags.FLAGS["config"])
        path = name.partition(":")[0]  # "configs/sit_xl.py:repa" names configs/sit_xl.py.
        if not os.path.isfile(path):
            sys.exit(f"--config={name}: no such file ({os.path.abspath(path)})")
        raise
    return True


def define_flags() -> None:
    """--config and --distributed; call only when running as a program, so job modules can
    be imported beside sara_jax.main (which defines --config too)."""
    define_config()
    flags.DEFINE_bool(
        "distributed", False, "Call jax.distributed.initialize() first: one process per host."
    )
    flags.mark_flags_as_required(["config"])
