"""The vocabulary of the config's rules: a rule is a test of one field's value and the words for
what the value must be; a section's table maps its field names to their rules. Every error
reads `config.<field> must be <expected>, got <value>`, and is an `InputError`: the commands
print it as one line."""

import difflib
from collections.abc import Callable, Iterator
from typing import Any

import ml_collections

from sara_jax.io.errors import InputError

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


def section_and_field_names(c: Any, prefix: str = "") -> Iterator[str]:
    """The dotted name of every section and every field of a ConfigDict."""
    for key, value in c.items():
        yield f"{prefix}{key}"
        if isinstance(value, ml_collections.ConfigDict):
            yield from section_and_field_names(value, f"{prefix}{key}.")


def check_name(c: ml_collections.ConfigDict, name: str) -> None:
    """Raises InputError unless `name` ("section.field") is a section or field of `c`; the
    error names the section that lacks it and the closest names `c` has, so that
    `train.batch_size` points to `data.global_batch_size`."""
    node, parts = c, name.split(".")
    for depth, part in enumerate(parts):
        where = ".".join(["config", *parts[:depth]])
        if not isinstance(node, ml_collections.ConfigDict):
            raise InputError(f"{where} is a {type(node).__name__} field, it has no field {part!r}")
        if part not in node:
            kind = "section or field" if depth == 0 else "field"
            close = closest(name, list(section_and_field_names(c)))
            hint = f"closest: {', '.join(close)}" if close else f"it has {', '.join(node)}"
            raise InputError(f"{where} has no {kind} {part!r}; {hint}")
        node = node[part]


def closest(name: str, names: list[str], n: int = 6) -> list[str]:
    """Up to `n` of the dotted `names` closest to `name`: as a whole (a misspelt field of the
    right section), by their last part (the right field in another section), or whose last
    part contains `name`'s (`batch_size` in `data.global_batch_size`); ties go to the closer
    whole name."""
    last = name.rpartition(".")[2]

    def likeness(full: str) -> tuple[float, float]:
        its_last = full.rpartition(".")[2]
        whole = difflib.SequenceMatcher(None, name, full).ratio()
        part = difflib.SequenceMatcher(None, last, its_last).ratio()
        return max(whole, part, 0.95 if len(last) > 3 and last in its_last else 0.0), whole

    # The sections `name` is in are no answer to it.
    scores = {full: likeness(full) for full in names if not name.startswith(full + ".")}
    ranked = sorted(scores, key=scores.get, reverse=True)[:n]
    return [full for full in ranked if scores[full][0] >= 0.6]


def value_of(c: ml_collections.ConfigDict, name: str) -> Any:
    """The field `name` ("section.field") of `c`."""
    for part in name.split("."):
        c = c[part]
    return c


def check(c: ml_collections.ConfigDict, name: str, ok: bool, expected: str) -> None:
    """Raises InputError `config.<name> must be <expected>, got <its value>` unless ok."""
    if not ok:
        raise InputError(f"config.{name} must be {expected}, got {value_of(c, name)!r}")


def apply(rules: Rules, section: str, c: ml_collections.ConfigDict) -> None:
    """Checks the fields of `c.<section>` against the section's table."""
    for names, (test, expected) in rules.items():
        for name in names.split():
            field = f"{section}.{name}"
            check(c, field, test(value_of(c, field)), expected)
