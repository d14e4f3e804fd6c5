"""The README command test: the user docs stay true to the code.

README.md stays short (<= 300 lines) and its relative links lead somewhere; every
``cnnsearch`` command line in the README's and the user guide's ``bash`` blocks, and every
row of the README's command table, uses a subcommand and flags that ``make_parser()``
knows; the annotated recipes are valid recipes; and the README names the commands CI and a
new user run (``bash dev.sh test``, ``bash dev.sh demo``). Fast: no study, no torch model.
"""

from __future__ import annotations

import argparse
import re
import tomllib
from pathlib import Path

import pytest

from cnnsearch.cli import make_parser

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
GUIDE = ROOT / "docs" / "guide.md"
DOCS = ("guide.md", "benchmarks.md", "development.md", "architecture.md")

FENCE = re.compile(r"^```([\w-]*)[^\n]*\n(.*?)^```", re.S | re.M)
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
# `cnnsearch SUB` or `.venv/bin/cnnsearch SUB`, not `cnnsearch.cli` or `cnnsearch[onnx]`
COMMAND = re.compile(r"(?:^|[\s`;&(])(?:\S*/)?cnnsearch\s+([a-z][\w-]*)")
FLAG = re.compile(r"(?<![\w-])(--?[A-Za-z][\w-]*)")
# a pipe into another command (`| head`), not an alternative (`best|fastest`, `[--json | --csv]`)
PIPE = re.compile(r"\s\|\s+(?=[A-Za-z.])")


def text(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def blocks(path: Path, *languages: str) -> list[str]:
    return [body for lang, body in FENCE.findall(text(path)) if lang in languages]


def subcommands() -> dict[str, set[str]]:
    """Each subcommand of the CLI with the option strings it accepts."""
    parser = make_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {name: {s for action in p._actions for s in action.option_strings} for name, p in sub.choices.items()}


def command_lines(body: str) -> list[str]:
    """The shell commands of a bash block: continuation lines joined, comments and prompts
    dropped, `&&` / `;` / pipes split apart."""
    joined = re.sub(r"\s*\\\n\s*", " ", body)
    out = []
    for line in joined.splitlines():
        line = re.sub(r"(^|\s)#.*$", "", line).strip()
        line = line.removeprefix("$ ")
        for part in re.split(r"&&|;|\|\|", line):
            out += [p.strip() for p in PIPE.split(part) if p.strip()]
    return out


def problems(command: str, known: dict[str, set[str]]) -> list[str]:
    """What is wrong with one documented ``cnnsearch`` invocation (empty when it is fine)."""
    found = COMMAND.search(command)
    if not found:
        return []
    sub = found.group(1)
    if sub not in known:
        return [f"{command!r}: no subcommand {sub!r} (known: {', '.join(sorted(known))})"]
    rest = command[found.end():]
    return [f"{command!r}: {sub} has no option {flag}" for flag in FLAG.findall(rest)
            if flag not in known[sub] and flag not in ("-h", "--help")]


def documented_commands(path: Path) -> list[str]:
    """The ``cnnsearch`` command lines of a file's bash blocks, and its ``$ cnnsearch ...``
    lines in plain blocks (a command shown with its output)."""
    shell = [c for body in blocks(path, "bash", "sh") for c in command_lines(body)]
    shown = [line[2:] for body in blocks(path, "", "console") for line in body.splitlines() if line.startswith("$ ")]
    return [c for c in shell + shown if COMMAND.search(c)]


def table_rows(path: Path) -> list[str]:
    """The rows of the README's command table: ``| `cnnsearch SUB ...` | ... | flags |``."""
    return [line.replace("\\|", "|") for line in text(path).splitlines() if line.startswith("| `cnnsearch ")]


# --- the README's shape -----------------------------------------------------------------


def test_readme_is_at_most_300_lines():
    lines = text(README).splitlines()
    assert len(lines) <= 300, f"README.md has {len(lines)} lines; move details to docs/guide.md"


@pytest.mark.parametrize("name", DOCS)
def test_the_docs_exist(name):
    assert (ROOT / "docs" / name).is_file()


@pytest.mark.parametrize("path", [README, *(ROOT / "docs" / n for n in DOCS)], ids=lambda p: p.name)
def test_relative_links_lead_to_files(path):
    if not path.exists():
        pytest.skip(f"{path.name} is missing (test_the_docs_exist says so)")
    outside_code = FENCE.sub("", text(path))
    broken = []
    for target in LINK.findall(outside_code):
        if "://" in target or target.startswith("mailto:"):
            continue
        file, _, anchor = target.partition("#")
        linked = path.parent / file if file else path
        if not linked.exists():
            broken.append(target)
        elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
            broken.append(target)
    assert not broken, f"{path.name}: links to missing files or headings: {broken}"


def anchors(path: Path) -> set[str]:
    """GitHub's anchors of a markdown file's headings: lower case, punctuation dropped,
    spaces made hyphens."""
    headings = re.findall(r"^#{1,6}\s+(.+?)\s*$", FENCE.sub("", text(path)), re.M)
    return {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in headings}


def test_readme_names_the_test_and_demo_commands():
    readme = text(README)
    bash = "\n".join(blocks(README, "bash"))
    # CI runs the README's test command (.ci/run): it must stay `bash dev.sh test`
    assert re.search(r"^bash dev\.sh test\b", bash, re.M), "the README's bash block lost `bash dev.sh test`"
    assert re.search(r"^bash dev\.sh demo\b", bash, re.M), "the README's bash block lost `bash dev.sh demo`"
    assert "`bash dev.sh test` is the test command" in readme


# --- commands against the CLI's parser ----------------------------------------------------


def test_the_checker_catches_a_wrong_flag_and_a_wrong_subcommand():
    known = subcommands()
    assert problems(".venv/bin/cnnsearch status x.toml [--json | --csv]", known) == []
    assert problems("cnnsearch search x.toml --workers K|auto --baseline a.json", known) == []
    assert problems("cnnsearch status x.toml --jsn", known) == ["'cnnsearch status x.toml --jsn': status has no option --jsn"]
    assert problems("cnnsearch serch x.toml", known)[0].startswith("'cnnsearch serch x.toml': no subcommand 'serch'")
    assert command_lines("cnnsearch show a \\\n  --json  # c\nls | head -n 1") == ["cnnsearch show a --json", "ls", "head -n 1"]


@pytest.mark.parametrize("path", [README, GUIDE], ids=lambda p: p.name)
def test_every_documented_command_is_one_the_cli_takes(path):
    commands = documented_commands(path)
    assert commands, f"{path.name}: no cnnsearch command in its bash blocks"
    known = subcommands()
    wrong = [p for c in commands for p in problems(c, known)]
    assert not wrong, "\n".join(wrong)


def test_the_command_table_matches_the_parser():
    known = subcommands()
    rows = table_rows(README)
    named = {COMMAND.search(row).group(1) for row in rows}
    assert named == set(known), f"the README's command table names {sorted(named)}, the CLI has {sorted(known)}"
    wrong = [p for row in rows for p in problems(row.strip("| "), known)]
    assert not wrong, "\n".join(wrong)


def test_the_readme_shows_the_study_commands():
    used = {COMMAND.search(c).group(1) for c in documented_commands(README)}
    assert {"show", "search", "status", "report", "finalize", "export"} <= used


# --- the annotated recipes ---------------------------------------------------------------


def recipes(path: Path) -> list[str]:
    return [b for b in blocks(path, "toml") if re.search(r"^name\s*=", b, re.M)]


def switched_on(body: str) -> str:
    """The recipe with its commented-out settings (``# key = value  # why``) written in."""
    return re.sub(r"^#\s*([a-z_]+\s*=\s*\S.*)$", r"\1", body, flags=re.M)


@pytest.mark.parametrize("commented", [False, True], ids=["as-written", "comments-on"])
def test_the_readmes_recipes_are_valid(commented):
    from cnnsearch.recipe import from_dict

    found = recipes(README)
    assert len(found) >= 2, "the README's annotated recipe and the photo-folder recipe"
    for body in found:
        data = tomllib.loads(switched_on(body) if commented else body)
        # written for studies/: its paths (the space, the baselines) resolve from there
        recipe = from_dict(data, ROOT / "studies")
        assert recipe.name == data["name"]


def test_the_annotated_recipe_names_every_recipe_setting():
    from dataclasses import fields

    from cnnsearch.recipe import EarlyStopping, LatencySection, Limits, Recipe, TrainSection

    annotated = max(recipes(README), key=len)
    text_ = annotated.lower()
    sections = {"train": TrainSection, "latency": LatencySection, "limits": Limits,
                "early_stopping": EarlyStopping}
    missing = [f.name for f in fields(Recipe)  # not a setting: which settings a recipe file leaves out
               if f.name not in ("space_toml", *sections) and f.metadata.get("stored", True) and f.name not in text_]
    missing += [f"{section}.{f.name}" for section, cls in sections.items() for f in fields(cls)
                if f.name not in text_]
    assert not missing, f"the README's annotated recipe does not mention {missing}"
