"""The package version: recorded on every trial (objective.versions) and read by `cnnsearch.__version__`."""

__version__ = "0.1.0"
