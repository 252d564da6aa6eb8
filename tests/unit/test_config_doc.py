"""docs/config.md is generated from the config sources and must be current."""

import difflib
import subprocess
import sys
from pathlib import Path

import pytest

from sara_jax import config_doc
from sara_jax.config import base_config

SOURCE = config_doc.CONFIG_SOURCE.read_text()
ANCHOR = "    t.sample_every = "


def with_new_train_field(comment: str) -> str:
    """sections.py's source with `t.new_knob = 7` (train.new_knob) added, `comment` on its line."""
    line = f"    t.new_knob = 7{comment}\n"
    at = SOURCE.index(ANCHOR)
    return SOURCE[:at] + line + SOURCE[at:]


def base_with_new_field():
    base = base_config()
    base.train.new_knob = 7
    return base


def test_doc_is_current():
    expected, written = config_doc.current(), config_doc.DOC.read_text()
    diff = "".join(difflib.unified_diff(written.splitlines(True), expected.splitlines(True)))
    assert written == expected, f"run `python -m sara_jax.config_doc`:\n{diff}"


def test_added_field_changes_the_doc_so_the_check_fails():
    files = config_doc._config_files()
    text = config_doc.render(base_with_new_field(), with_new_train_field("  # A new knob."), files)
    assert "| `train.new_knob` | `7` | A new knob. |" in text
    assert text != config_doc.DOC.read_text()


def test_field_without_a_comment_is_named():
    with pytest.raises(ValueError, match="config.train.new_knob has no meaning"):
        config_doc.render(base_with_new_field(), with_new_train_field(""), [])


def test_field_the_parser_cannot_see_is_named():
    # Assigned somewhere the generator does not read (or not in sections.py at all).
    with pytest.raises(ValueError, match="config.train.new_knob has no meaning"):
        config_doc.render(base_with_new_field(), SOURCE, [])


def test_meanings_come_from_the_line_or_the_comment_block_above():
    fields = {
        name: (section, meaning) for name, section, meaning in config_doc.parse_fields(SOURCE)
    }
    assert fields["model.encoder_depth"] == (False, "Block whose output is aligned (1-based).")
    assert fields["encoder.checkpoint"][1].startswith("A Hugging Face hub id, a local directory")
    assert fields["encoder.checkpoint"][1].endswith('(unused by "demo_vit").')
    assert fields["model"][0] and fields["model"][1]
    # Helper-built sections bring their fields under both names.
    assert fields["optim.lr"] == fields["disc.optim.lr"]


def test_every_config_file_and_field_is_in_the_doc():
    text = config_doc.DOC.read_text()
    for path in (config_doc.ROOT / "configs").glob("*.py"):
        assert f"`configs/{path.name}`" in text
    assert "`sara`, `repa`, `none`" in text


def test_cli_writes_and_checks(tmp_path: Path):
    doc = tmp_path / "config.md"
    doc.write_text("stale\n")

    def cli(*flags: str) -> subprocess.CompletedProcess:
        command = [sys.executable, "-m", "sara_jax.config_doc", f"--out={doc}", *flags]
        return subprocess.run(command, capture_output=True, text=True, timeout=120)

    stale = cli("--check")
    assert stale.returncode != 0 and "is stale" in stale.stderr
    assert cli().returncode == 0
    assert doc.read_text() == config_doc.current()
    assert cli("--check").returncode == 0
