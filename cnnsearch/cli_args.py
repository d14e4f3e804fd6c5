"""Argument types of the ``cnnsearch`` command line: each bad value is one UsageError line
(exit 2), never argparse's usage dump or a traceback."""

from __future__ import annotations

import argparse

from .errors import CnnSearchError


class UsageError(CnnSearchError):
    """Bad command-line arguments."""


class DefaultsShown(argparse.HelpFormatter):
    """An option's help ends with its default, unless it has none or its help says it already."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help  # never None here: argparse formats only the options that have help
        none = any(action.default is v for v in (None, False, argparse.SUPPRESS))  # `is`: a default of 0 is one
        if none or "default" in text:
            return text
        return f"{text} (default: %(default)s)"


class Parser(argparse.ArgumentParser):
    def __init__(self, **kwargs):  # by keyword, as argparse makes its subparsers
        kwargs.setdefault("formatter_class", DefaultsShown)
        super().__init__(**kwargs)

    def error(self, message: str):  # one line and exit 2, like every other bad input
        raise UsageError(message)


def workers_count(text: str) -> int:
    if text == "auto":
        from .runner import auto_workers

        return auto_workers()
    try:
        return int(text)
    except ValueError:
        raise UsageError(f"--workers: expected a number or auto, got {text!r}") from None


def input_shape(text: str) -> tuple[int, int, int]:
    try:
        c, h, w = (int(v) for v in text.split(","))
    except ValueError:
        raise UsageError(f"--input: expected C,H,W such as 3,32,32, got {text!r}") from None
    if min(c, h, w) < 1:
        raise UsageError(f"--input: sizes must be positive, got {text!r}")
    return c, h, w


def checked_seed(value: int, *, bits: int) -> int:
    """``--seed`` within what the seeded generator takes (numpy's 32 bits, torch's 64), so
    that a negative or huge seed is one error line, not the generator's traceback."""
    if not 0 <= value < 2**bits:
        raise UsageError(f"--seed: {value} is not in [0, 2**{bits})")
    return value
