"""What every command-line job does first (`sara_jax.preprocess`, `sara_jax.sample`), the
--config flag every command defines, and `run`, which every command's `__main__` calls.

An input error (`io/errors.py`: a config field that does not exist, a value a rule refuses, a
file that is missing or holds the wrong thing, a flag absl refuses) ends a command with one line
on stderr, `<command>: error: <what and what was expected>`, and exit status 2, the status of a
usage error (as argparse). Any other exception is a bug and keeps its traceback.
"""

import importlib.util
import logging
import os
import re
import sys
from collections.abc import Callable
from typing import Any, NoReturn

import jax
import ml_collections
from absl import app, flags
from absl import logging as absl_logging
from ml_collections import config_flags

from sara_jax.config import validate
from sara_jax.config.rules import check_name, value_of
from sara_jax.io.errors import INPUT_ERRORS


def run(main: Callable[[list[str]], Any]) -> None:
    """`app.run(main)`, with every input error one line and exit status 2 (see the top)."""

    def main_with_input_errors(argv: list[str]) -> Any:
        try:
            return main(argv)
        # app.run would print the module's docstring and every flag's help before the error.
        except (*INPUT_ERRORS, app.UsageError) as err:
            fail(str(err))

    app.run(main_with_input_errors, flags_parser=parse_flags)


def fail(message: str) -> NoReturn:
    """Ends the program: `message` as one line on stderr, exit status 2."""
    prog = getattr(sys.modules["__main__"].__spec__, "name", None)  # Set under `python -m`.
    prog = prog or os.path.basename(sys.argv[0])
    line = " ".join(part.strip() for part in message.splitlines())
    sys.stderr.write(f"{prog}: error: {line}\n")
    sys.exit(2)


def parse_flags(argv: list[str]) -> list[str]:
    """absl's flag parsing, with what it refuses as one line: an unknown flag, a missing one, a
    value its type refuses. --config is checked first (`check_config_args`)."""
    config = None
    try:
        if "config" in flags.FLAGS:
            config = check_config_args(flags.FLAGS.read_flags_from_files(argv, force_gnu=False))
        return flags.FLAGS(argv)
    except flags.Error as err:
        fail(_with_field_type(str(err), config))
    except INPUT_ERRORS as err:
        fail(str(err))


def check_config_args(argv: list[str]) -> ml_collections.ConfigDict | None:
    """The config that --config in `argv` names (None if not given), after checking what
    ml_collections would otherwise report with a traceback: a file that does not exist, an
    input error of its `get_config`, an override `--config.<name>` of no field. Its config is
    loaded a second time here (a config file is cheap and has no side effects), because
    ml_collections applies the overrides as it loads it."""
    argv = argv[: argv.index("--")] if "--" in argv else argv  # Arguments, not flags, follow.
    given = [i for i, arg in enumerate(argv) if re.match(r"--?config(=|$)", arg)]
    if not given:
        return None  # mark_flags_as_required says so.
    i = given[-1]  # As absl: the last value counts.
    if "=" in argv[i]:
        name = argv[i].partition("=")[2]
    elif i + 1 < len(argv):
        name = argv[i + 1]
    else:
        return None  # absl says it needs a value.
    path, _, arg = name.partition(":")  # "configs/sit_xl.py:repa" names configs/sit_xl.py.
    if not os.path.isfile(path):
        fail(_no_such_config(name))
    spec = importlib.util.spec_from_file_location("sara_jax_checked_config", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config(arg) if arg else module.get_config()
    for flag in argv[i + 1 :]:
        if override := re.match(r"--?(?:no)?config\.([^=]+)", flag):
            try:
                check_name(config, override[1])
            except INPUT_ERRORS as err:
                fail(f"--config.{override[1]}: {err}")
    return config


def _with_field_type(message: str, config: ml_collections.ConfigDict | None) -> str:
    """absl's `flag --config.<field>=<value>: <why>` as `--config.<field>=<value>: config.<field>
    takes a <type> (<why>)`: absl's reason alone does not always name the type (a bool's
    "Non-boolean argument"). Other messages as they are."""
    refused = re.match(r"flag (--config\.([\w.]+)=.*?): (.*)", message)
    if config is None or refused is None:
        return message
    arg, field, why = refused.groups()
    kind = type(value_of(config, field)).__name__
    return f"{arg}: config.{field} takes {'an' if kind[0] in 'aeiou' else 'a'} {kind} ({why})"


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
    wherever the config is first read (ml_collections defers a load failure to then); under
    `run`, `check_config_args` says so before."""
    holder = config_flags.DEFINE_config_file("config", None, help_text)
    flags.register_validator("config", _config_file_exists)
    return holder


def _config_file_exists(config: ml_collections.ConfigDict | None) -> bool:
    """What `check_config_args` checks first, for a program that calls app.run, not `run`."""
    if config is None:  # Not given: mark_flags_as_required says so.
        return True
    try:
        config.keys()  # A config that failed to load raises here.
    except OSError:
        name = config_flags.get_config_filename(flags.FLAGS["config"])
        if not os.path.isfile(name.partition(":")[0]):
            fail(_no_such_config(name))
        raise
    return True


def _no_such_config(name: str) -> str:
    path = name.partition(":")[0]
    return f"--config={name}: no such file ({os.path.abspath(path)})"


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
