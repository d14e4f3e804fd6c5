"""The exception hierarchy. Every error a user can cause is a CnnSearchError.

The CLI turns any CnnSearchError into one ``error: ...`` line and exit code 2;
anything else is an internal fault (exit 1).
"""


class CnnSearchError(Exception):
    """Base class of every error caused by user input (specs, spaces, recipes, data)."""


class SpecError(CnnSearchError):
    """An architecture spec is malformed: unknown key, wrong type, value off the whitelist."""


class ShapeError(CnnSearchError):
    """A well-formed spec describes a network that cannot run on its input."""


class SpaceError(CnnSearchError):
    """A search-space TOML file is malformed."""


class RecipeError(CnnSearchError):
    """A study recipe TOML file is malformed, or names a study that does not exist."""


class DataError(CnnSearchError):
    """A dataset cannot be found, downloaded or read."""
