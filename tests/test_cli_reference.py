"""docs/cli.md is every command's --help, as the code prints it: the reference cannot drift
from the code, and a help text changed by accident fails here. After changing a command's
options or help, write it again with `.venv/bin/python tests/test_cli_reference.py`."""

import argparse
import os
import re
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

    saved = {k: os.environ.get(k) for k in ("COLUMNS", "NO_COLOR", "PYTHON_COLORS")}
    os.environ.update(COLUMNS=WIDTH, NO_COLOR="1", PYTHON_COLORS="0")  # 3.14 may colour help
    try:
        parser = make_parser()
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parts = [HEAD, "## cnnsearch\n", "```text\n" + parser.format_help() + "```\n"]
        for name, command in sub.choices.items():
            parts += [f"## cnnsearch {name}\n", "```text\n" + command.format_help() + "```\n"]
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return "\n".join(parts)


def words(text: str) -> str:
    """``text`` word for word, as any Python 3.11+ prints it: line breaks (a word may also be
    split after a hyphen) and an option's "-o OUTPUT, --output OUTPUT" (3.13 writes
    "-o, --output OUTPUT") are argparse's, not ours."""
    text = re.sub(r"(\w)- +(\w)", r"\1-\2", " ".join(text.split()))
    return re.sub(r"(-\w) [A-Z_]+, (--)", r"\1, \2", text)


def test_the_command_line_reference_is_what_each_command_s_help_prints():
    assert words(REFERENCE.read_text()) == words(reference()), (
        "docs/cli.md differs from the commands' --help: write it again with "
        "`.venv/bin/python tests/test_cli_reference.py` (and check the change is meant)")


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    REFERENCE.write_text(reference())
    print(f"wrote {REFERENCE}")
