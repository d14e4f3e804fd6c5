"""The exception hierarchy. Every error a user can cause is a CnnSearchError.

The CLI turns any CnnSearchError into one ``error: ...`` line and exit code 2;
anything else is an internal fault (exit 1).
"""


class CnnSearchError(Exception):
    """Base class of every error caused by user input (specs, spaces, recipes, data)."""

    def __str__(self) -> str:
        # one line whatever the input held: a key or value with a newline or a control
        # character is shown escaped, never breaks the `error: ...` line
        return "".join(c if c.isprintable() else repr(c)[1:-1] for c in super().__str__())


class SpecError(CnnSearchError):
    """An architecture spec is malformed: unknown key, wrong type, value off the whitelist.

    ``path`` is the field (``blocks[2].activation``) or file, ``message`` what is wrong with
    it; ``str()`` joins them as ``path: message``. Callers that re-label the error (a search
    space validating its choices) read the two as data instead of splitting the text.
    """

    def __init__(self, path: str, message: str):
        super().__init__(f"{path}: {message}")
        self.path = path
        self.message = message


class ShapeError(CnnSearchError):
    """A well-formed spec describes a network that cannot run on its input."""


class SpaceError(CnnSearchError):
    """A search-space TOML file is malformed."""


class RecipeError(CnnSearchError):
    """A study recipe TOML file is malformed, or names a study that does not exist."""


class DataError(CnnSearchError):
    """A dataset cannot be found, downloaded or read."""


class FailingTrials(Exception):
    """Trial after trial raised (a broken GPU, a bug): a fault of the machine or the code,
    not of the input, so not a CnnSearchError; the CLI says so in one line and exits 1."""


def not_utf8(exc: UnicodeDecodeError) -> str:
    """``not UTF-8 text (byte 0xff at offset 0)...``: what every loader says (after the file's
    name) of a file saved in another encoding (latin-1, UTF-16) or not text at all."""
    return f"not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start}); save it as UTF-8"
