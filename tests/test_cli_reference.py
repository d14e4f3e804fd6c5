"""docs/cli.md is every command's --help, as the code prints it: the reference cannot drift
from the code, and a help text changed by accident fails here. After changing a command's
options or help, write it again with `.venv/bin/python tests/test_cli_reference.py`."""

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = ROOT / "docs" / "cli.md"
WIDTH = "100"  # argparse wraps to $COLUMNS: fixed, so the page is the same on any terminal

HEAD = """# Command-line reference

Every command's `--help`, as `cnnsearch` prints it (written by
`.venv/bin/python tests/test_cli_reference.py`; `tests/test_cli_reference.py` checks it
matches the code). The guide (`docs/guide.md`) says when to use which.
"""


def reference() -> str:
    from cnnsearch.cli import make_parser

    old = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = WIDTH
    try:
        parser = make_parser()
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parts = [HEAD, "## cnnsearch\n", "```text\n" + parser.format_help() + "```\n"]
        for name, command in sub.choices.items():
            parts += [f"## cnnsearch {name}\n", "```text\n" + command.format_help() + "```\n"]
    finally:
        if old is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = old
    return "\n".join(parts)


def test_the_command_line_reference_is_what_each_command_s_help_prints():
    # word for word; the line breaks are argparse's, which differ a little between Pythons
    assert REFERENCE.read_text().split() == reference().split(), (
        "docs/cli.md differs from the commands' --help: write it again with "
        "`.venv/bin/python tests/test_cli_reference.py` (and check the change is meant)")


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    REFERENCE.write_text(reference())
    print(f"wrote {REFERENCE}")
