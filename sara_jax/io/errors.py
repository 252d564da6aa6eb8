"""The errors a user's input causes, told apart from bugs.

A config value a rule refuses, a file that is missing or holds the wrong thing: the code that
checks an input raises one of these, and every command (`io/cli.run`) prints its message as one
line and exits with status 2. Any other exception is a bug and keeps its traceback: a ValueError
from inside jax says nothing a user can fix. They subclass what such errors always were, so
callers and tests that catch ValueError or FileNotFoundError still do.

This module imports nothing, so the config (loaded without jax) and every package can raise them.
"""


class InputError(ValueError):
    """A value the user gave (a config field, a flag, a file's content) that is refused; the
    message names it and what was expected."""


class MissingInput(FileNotFoundError):
    """A file or directory the user named that does not exist or holds nothing usable; the
    message names the flag or field and the path."""


INPUT_ERRORS = (InputError, MissingInput)
