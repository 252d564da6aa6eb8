"""The vocabulary of the config's rules: a rule is a test of one field's value and the words for
what the value must be; a section's table maps its field names to their rules. Every error
reads `config.<field> must be <expected>, got <value>`."""

from collections.abc import Callable, Iterator
from typing import Any

import ml_collections

Rule = tuple[Callable[[Any], bool], str]  # (test of a value, what it must be)
Rules = dict[str, Rule]  # Space-separated field names of one section -> their rule.

POSITIVE: Rule = (lambda v: v > 0, "> 0")
NON_NEGATIVE: Rule = (lambda v: v >= 0, ">= 0")
FRACTION: Rule = (lambda v: 0 <= v < 1, "in [0, 1)")


def one_of(options: tuple[str, ...]) -> Rule:
    """The value is one of `options`, all listed in the error."""
    return (lambda v: v in options, f"one of {options}")


def either(a: str, b: str) -> Rule:
    """The value is `a` or `b`."""
    return (lambda v: v in (a, b), f"{a!r} or {b!r}")


def flat_items(c: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted field name, value) of every leaf of a ConfigDict."""
    for key, value in c.items():
        name = f"{prefix}{key}"
        if isinstance(value, ml_collections.ConfigDict):
            yield from flat_items(value, name + ".")
        else:
            yield name, value


def value_of(c: ml_collections.ConfigDict, name: str) -> Any:
    """The field `name` ("section.field") of `c`."""
    for part in name.split("."):
        c = c[part]
    return c


def check(c: ml_collections.ConfigDict, name: str, ok: bool, expected: str) -> None:
    """Raises ValueError `config.<name> must be <expected>, got <its value>` unless ok."""
    if not ok:
        raise ValueError(f"config.{name} must be {expected}, got {value_of(c, name)!r}")


def apply(rules: Rules, section: str, c: ml_collections.ConfigDict) -> None:
    """Checks the fields of `c.<section>` against the section's table."""
    for names, (test, expected) in rules.items():
        for name in names.split():
            field = f"{section}.{name}"
            check(c, field, test(value_of(c, field)), expected)
