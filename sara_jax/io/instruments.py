"""Instruments that ship with the code: small weight files that would otherwise be trained on
each machine (the demo encoder, the shapes evaluator) and so differ from machine to machine.

A study compares methods by curves read with these instruments; an encoder or evaluator
retrained on another CPU moves every curve (float32 rounds differently there), so the files a
study's config uses are kept in `sara_jax/instruments/`, each named as its cache file (the
digest of everything that determines it) and listed in `manifest.json` with its sha256, the
command that made it and the machine it was made on. A config whose instrument is shipped
reads the shipped file, checked by its sha256; any other config trains its own on this
machine and caches it (`files.cached_tree`), and the log says which happened.
`python -m sara_jax.instruments --config=...` writes a config's instruments into the folder.
"""

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from absl import logging

from sara_jax.io import files
from sara_jax.io.errors import InputError

FOLDER = Path(__file__).resolve().parent.parent / "instruments"
MANIFEST = FOLDER / "manifest.json"


def manifest() -> dict[str, dict[str, Any]]:
    """file name -> its entry ("sha256", "what", "command", "environment", ...); {} when none
    is shipped."""
    if not MANIFEST.exists():
        return {}
    return json.loads(MANIFEST.read_text())


def shipped_or_cached(path: Path, template: Any, build: Callable[[], Any], what: str) -> Any:
    """The shipped instrument named `path.name` if there is one, else `files.cached_tree(path,
    template, build, what)`.

    A shipped file is never rebuilt: one whose sha256 is not its manifest entry's, or that
    cannot be read as `template`, is an InputError naming the file and how to restore it.
    """
    shipped = FOLDER / path.name
    if not shipped.exists():
        logging.info("%s: not a shipped instrument; trained on this machine if not cached", what)
        return files.cached_tree(path, template, build, what)
    entry, digest = manifest().get(path.name), files.sha256(shipped)
    restore = f"restore it (git checkout -- sara_jax/instruments/{path.name})"
    if entry is None or entry["sha256"] != digest:
        listed = "not listed in" if entry is None else "not the sha256 listed in"
        raise InputError(f"{shipped} is {listed} {MANIFEST.name}; {restore}")
    try:
        tree = files.read_cached_tree(shipped, template)
    except ValueError as err:
        raise InputError(f"{shipped} cannot be used ({err}); {restore}") from None
    logging.info("%s: the shipped instrument %s (sha256 %s)", what, shipped.name, digest[:16])
    return tree


def pin(cached: Path, what: str, command: str, info: dict[str, Any]) -> Path:
    """Copies the cache file `cached` into the shipped instruments and lists it in the manifest
    with its sha256, `what`, the `command` that made it and `info` (the machine, the settings).
    Refuses to replace a shipped file that differs (a study's results were read with it)."""
    target, digest = FOLDER / cached.name, files.sha256(cached)
    if target.exists() and files.sha256(target) != digest:
        raise InputError(
            f"{target} is shipped and differs from {cached}; results were read with the shipped "
            "one: delete it first if it is really to be replaced"
        )
    FOLDER.mkdir(exist_ok=True)
    files.write_bytes(target, cached.read_bytes())  # Atomically, as every cache file.
    entries = manifest()
    entries[cached.name] = {"what": what, "sha256": digest, "command": command, **info}
    files.write_json(MANIFEST, dict(sorted(entries.items())))
    return target
