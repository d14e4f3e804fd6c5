"""A study's results as data, for a notebook or a script: open it, get a DataFrame.

    import cnnsearch
    study = cnnsearch.open_study("studies/digits.toml")         # or a storage URL and a name
    df = cnnsearch.trials_frame(study)                           # one row per trial
    df[df.pareto].sort_values("latency_ms")[["trial", "accuracy", "latency_ms", "params_lr"]]

``open_study`` only reads: it never creates a study (``cnnsearch search`` does).
"""

from __future__ import annotations

from pathlib import Path

import optuna

from .errors import RecipeError
from .recipe import resolve_recipe
from .report import trials_frame
from .storage import load_existing_study

__all__ = ["open_study", "trials_frame"]


def open_study(recipe_or_storage: str | Path, study: str | None = None) -> optuna.Study:
    """An existing study, read-only: nothing is created, even a missing database file.

    Args:
        recipe_or_storage: a recipe file (its storage and study name), or a storage URL
            (``sqlite:///x.db``, ``postgresql+psycopg://...``).
        study: the study's name: another study in the recipe's storage, or the one to open
            in a storage URL (None: the recipe's study, or the storage's only study).

    Returns:
        The ``optuna.Study``; ``trials_frame(study)`` turns it into a DataFrame.

    Raises:
        RecipeError: no such study (the message lists the storage's studies), a storage
            URL with several studies and no ``study``, or a recipe that does not validate.
    """
    target = str(recipe_or_storage)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if "://" not in target:  # a recipe file
        recipe = resolve_recipe(target, None, study)
        return load_existing_study(recipe.storage, recipe.name)
    if study is None:
        from .storage import open_storage, storage_exists

        if not storage_exists(target):  # reading only: opening would create an empty database
            raise RecipeError(f"{target}: no such database")
        names = optuna.get_all_study_names(open_storage(target))
        if len(names) != 1:
            raise RecipeError(f"{target} holds {len(names)} studies ({', '.join(names) or 'none'}): name one "
                              "with study=")
    return load_existing_study(target, study)  # None: optuna.load_study takes the storage's only study
