"""What every command-line job does first (`sara_jax.preprocess`, `sara_jax.sample`), and the
--config flag every command defines."""

import logging
import os
import sys

import jax
import ml_collections
from absl import app, flags
from absl import logging as absl_logging
from ml_collections import config_flags

from sara_jax.config import validate


def begin(argv: list[str]) -> None:
    """What every command does first: rejects stray arguments and quiets the log."""
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    quiet_logs()


def start(argv: list[str]) -> ml_collections.ConfigDict:
    """`begin`, then joins the other hosts under --distributed (one process per host), and
    returns the validated --config."""
    begin(argv)
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


_PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class _OwnInfo(logging.Filter):
    """Passes warnings and errors from anyone, and INFO from sara_jax's own modules only, unless
    absl's --verbosity is raised (-v 1 shows everything)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return (
            record.levelno >= logging.WARNING
            or record.pathname.startswith(_PACKAGE)
            or absl_logging.get_verbosity() >= 1
        )


def quiet_logs() -> None:
    """Keeps the default log to what a user reads: orbax logs ~45 INFO lines per checkpoint
    and jax, grain and clu more; absl's handler drops those (their warnings stay)."""
    handler = absl_logging.get_absl_handler()
    if not any(isinstance(f, _OwnInfo) for f in handler.filters):
        handler.addFilter(_OwnInfo())
