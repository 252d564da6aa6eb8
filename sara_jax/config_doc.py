"""Writes docs/config.md, the config reference, from the sources so that it cannot drift.

`python -m sara_jax.config_doc` rewrites it; `--check` exits non-zero when it is stale (a test
runs that). Each field's default is read from `base_config()` and its meaning from the comment
on its line in `sara_jax/config/sections.py` (or the comment lines directly above it); a field
without one stops the generator with an error naming it, so no field goes undocumented.
"""

import ast
import importlib.util
import io
import sys
import tokenize
from pathlib import Path
from typing import Any

from absl import app, flags

from sara_jax import config as config_lib

ROOT = Path(__file__).resolve().parent.parent
CONFIG_SOURCE = Path(config_lib.sections.__file__)
DOC = ROOT / "docs" / "config.md"


def _comments(source: str) -> tuple[dict[int, str], set[int]]:
    """Comment text by line number, and the numbers of lines holding nothing but a comment."""
    comments, code_lines = {}, set()
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            comments[tok.start[0]] = tok.string.lstrip("#").strip()
        elif tok.type not in (tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT):
            code_lines.update(range(tok.start[0], tok.end[0] + 1))
    return comments, set(comments) - code_lines


def _meaning(node: ast.stmt, comments: dict[int, str], comment_only: set[int]) -> str:
    """The comment on the statement's lines, else the comment block right above it."""
    for line in range(node.lineno, node.end_lineno + 1):
        if line in comments and line not in comment_only:
            return comments[line]
    above, line = [], node.lineno - 1
    while line in comment_only:
        above.insert(0, comments[line])
        line -= 1
    return " ".join(above)


def _dotted(target: ast.expr) -> list[str] | None:
    """`c.model.depth` -> ["model", "depth"] (the root variable dropped); None if not c.x..."""
    parts = []
    while isinstance(target, ast.Attribute):
        parts.insert(0, target.attr)
        target = target.value
    return parts if parts and isinstance(target, ast.Name) else None


def parse_fields(source: str) -> list[tuple[str, bool, str]]:
    """(dotted name, is a section, meaning) of every assignment `base_config()` makes, in
    source order; a section built by a function of the module (`c.optim = _adamw()`) brings in
    the fields that function assigns (`o.lr = ...` is `optim.lr`)."""
    comments, comment_only = _comments(source)
    functions = {f.name: f for f in ast.parse(source).body if isinstance(f, ast.FunctionDef)}

    def walk(function: ast.FunctionDef, prefix: str) -> list[tuple[str, bool, str]]:
        found = []
        for node in function.body:
            if not (isinstance(node, ast.Assign) and len(node.targets) == 1):
                continue
            parts = _dotted(node.targets[0])
            if parts is None:
                continue
            name = prefix + ".".join(parts)
            callee = node.value.func if isinstance(node.value, ast.Call) else None
            helper = isinstance(callee, ast.Name) and callee.id in functions
            section = helper or (isinstance(callee, ast.Attribute) and callee.attr == "ConfigDict")
            found.append((name, section, _meaning(node, comments, comment_only)))
            if helper:
                found += walk(functions[callee.id], name + ".")
        return found

    return walk(functions["base_config"], "")


def _cell(value: Any) -> str:
    """Text safe inside a Markdown table cell: no column breaks, no HTML tags."""
    return str(value).replace("|", "\\|").replace("<", "&lt;")


def _config_files() -> list[tuple[str, str, tuple[str, ...]]]:
    """(file name, first paragraph of its docstring, VARIANTS) of every configs/*.py."""
    files = []
    for path in sorted((ROOT / "configs").glob("*.py")):
        docstring = ast.get_docstring(ast.parse(path.read_text())) or ""
        spec = importlib.util.spec_from_file_location(f"_configs_{path.stem}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        summary = " ".join(docstring.split("\n\n")[0].split())
        files.append((path.name, summary, tuple(getattr(module, "VARIANTS", ()))))
    return files


def render(base: Any, source: str, config_files: list[tuple[str, str, tuple[str, ...]]]) -> str:
    """The whole of docs/config.md for these defaults, sections.py source and config files.

    Raises:
      ValueError: naming a field of `base` that has no comment in `source`, or that `source`
        does not assign in a form this generator reads (`section.field = value`).
    """
    defaults = dict(config_lib.flat_items(base))
    parsed = parse_fields(source)
    sections = {name: meaning for name, is_section, meaning in parsed if is_section}
    meanings = {name: meaning for name, is_section, meaning in parsed if not is_section}
    for name in sorted(defaults.keys() | meanings.keys() | sections.keys()):
        if name in defaults and not meanings.get(name):
            raise ValueError(
                f"config.{name} has no meaning: add a comment on its line in {CONFIG_SOURCE.name} "
                "(an assignment `section.field = value  # what it is`)"
            )
        if name in sections and not sections[name]:
            raise ValueError(f"config.{name} (a section) has no comment in {CONFIG_SOURCE.name}")
    if stale := meanings.keys() - defaults.keys():
        raise ValueError(f"fields assigned in the source but absent from base_config(): {stale}")

    lines = [
        "# Config reference",
        "",
        "Generated by `python -m sara_jax.config_doc` from `sara_jax/config/sections.py` (defaults",
        "and the comments beside them) and `configs/*.py`; `tests/unit/test_config_doc.py` fails",
        "when this page is stale, so edit those files and regenerate rather than editing it.",
        "",
        "Every run is a config file whose `get_config(arg)` starts from `base_config()` below and",
        "changes what differs; `--config=FILE:VARIANT` passes `VARIANT` as `arg`. Any field can be",
        "overridden on the command line, e.g. `--config.optim.lr=2e-4`; a misspelt field, a wrong",
        "type or a bad value stops the run before anything is built, naming the field.",
        "",
        "## Config files",
        "",
        "| file | what | variants |",
        "| --- | --- | --- |",
    ]
    for name, summary, variants in config_files:
        shown = ", ".join(f"`{v}`" for v in variants) or "(none)"
        lines.append(f"| `configs/{name}` | {_cell(summary)} | {_cell(shown)} |")
    lines += [
        "",
        "## Fields",
        "",
        "Defaults are the paper's SiT-XL/2 ImageNet-256 run.",
    ]
    section_of = {name: name.rpartition(".")[0] for name in meanings}
    for section in ["", *sections]:
        fields = [name for name in meanings if section_of[name] == section]
        if not fields:
            continue
        heading = f"`{section}`: {_cell(sections[section])}" if section else "Top level"
        lines += ["", f"### {heading}", "", "| field | default | meaning |", "| --- | --- | --- |"]
        for name in fields:
            lines.append(f"| `{name}` | `{defaults[name]!r}` | {_cell(meanings[name])} |")
    return "\n".join(lines) + "\n"


def current() -> str:
    """docs/config.md as the sources say it should be now."""
    return render(config_lib.base_config(), CONFIG_SOURCE.read_text(), _config_files())


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    text, doc = current(), Path(flags.FLAGS.out)
    if flags.FLAGS.check:
        if not doc.exists() or doc.read_text() != text:
            sys.exit(f"{doc} is stale: run `python -m sara_jax.config_doc` and commit it")
        return
    doc.write_text(text)


if __name__ == "__main__":
    flags.DEFINE_bool("check", False, "Only compare: exit 1 if the doc is stale.")
    flags.DEFINE_string("out", str(DOC), "The reference to write or check.")
    app.run(main)
