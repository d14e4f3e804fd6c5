"""Which sampler and early-stopping settings a study searches with, fixed when it is made.

A study records at creation what its recipe resolved to (``user_attrs["search"]``): the
sampler's name, the options its constructor was given, and the early-stopping settings.
A later version may change a default (the recipe's ``sampler``, what a name constructs,
early stopping on or off) without breaking a study made before: a recipe that does not
write a setting resumes a study with the study's recorded one, not today's default.

- A study made before the record existed resolves from its stored recipe (which holds
  the sampler name and early-stopping settings resolved then) and the constructors of
  that time (``LEGACY_OPTIONS``); one with no stored recipe, to what was shipped then:
  ``TPESampler(seed, multivariate=True, group=True)`` under Optuna 5 (so its constant
  liar on), early stopping off.
- A recipe that writes a sampler other than the study's is refused, naming both and the
  way out; a written early-stopping setting that differs is refused as any changed
  setting is (``study.check_recipe``).
"""

from __future__ import annotations

from dataclasses import asdict, fields, replace
from typing import Any

import optuna

from .errors import RecipeError
from .recipe import SAMPLERS, EarlyStopping, Recipe

RECORD_KEY = "search"  # study.user_attrs[RECORD_KEY]: {"sampler", "sampler_options", "early_stopping"}

# what each name constructs today (beside the seed), every option that matters written out
# rather than left to Optuna's defaults (Optuna 5 turned TPE's constant liar on by default):
# recorded with a study, so that a later change here leaves a study made now on the
# sampler it started with
SAMPLER_OPTIONS: dict[str, dict[str, Any]] = {
    "tpe": {"multivariate": True, "group": True, "constant_liar": True},
    "nsga2": {},
    "gp": {},
    "random": {},
    "evolution": {"population": 12, "tournament": 4},  # evolution.py: local search around the Pareto set
}
# what each name constructed before studies recorded it (up to commit 6e0b3b5, which required
# Optuna 5: TPE's constant liar on; a study made under Optuna 4, before 2917ddc, ran without it)
LEGACY_OPTIONS: dict[str, dict[str, Any]] = {
    "tpe": {"multivariate": True, "group": True, "constant_liar": True}, "nsga2": {}, "gp": {}, "random": {},
}
LEGACY_SAMPLER = "tpe"  # the recipe default before studies recorded it
# early stopping's defaults before studies recorded it: off, and these settings when switched on
LEGACY_EARLY_STOPPING: dict[str, Any] = {"enabled": False, "margin": 0.0, "rungs": [1 / 6, 1 / 3, 2 / 3],
                                         "keep": 1 / 3, "min_epoch": 1}


def make_sampler(name: str, seed: int, options: dict[str, Any] | None = None) -> optuna.samplers.BaseSampler:
    """A seeded sampler: ``name``'s constructor with ``options`` (default: today's, ``SAMPLER_OPTIONS``).

    Samplers read the constraint each trial sets (Optuna 5's Trial.set_constraint).
    """
    if name not in SAMPLERS:
        raise RecipeError(f"sampler: {name!r} is not one of {', '.join(SAMPLERS)}")
    kwargs = dict(SAMPLER_OPTIONS[name] if options is None else options)
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, **kwargs)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, **kwargs)
    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed, **kwargs)
    if name == "evolution":
        from .evolution import EvolutionSampler

        return EvolutionSampler(seed=seed, **kwargs)
    return optuna.samplers.RandomSampler(seed=seed, **kwargs)


def record_of(recipe: Recipe) -> dict[str, Any]:
    """What a study made from ``recipe`` records: its resolved sampler and early stopping."""
    es = asdict(recipe.early_stopping)
    return {"sampler": recipe.sampler, "sampler_options": dict(SAMPLER_OPTIONS[recipe.sampler]),
            "early_stopping": {**es, "rungs": list(es["rungs"])}}


def recorded(user_attrs: dict[str, Any]) -> dict[str, Any]:
    """A study's record (its ``user_attrs``); for a study made before records, what it ran with then."""
    if RECORD_KEY in user_attrs:
        return user_attrs[RECORD_KEY]
    stored = user_attrs.get("recipe") or {}
    sampler = stored.get("sampler", LEGACY_SAMPLER)
    es_fields = {f.name for f in fields(EarlyStopping)}
    # a stored recipe holds the early-stopping settings it resolved to; one stored before
    # early stopping's rework lacks the newer keys (they take today's defaults, as study.check_recipe allows)
    es = {**LEGACY_EARLY_STOPPING,
          **{k: v for k, v in (stored.get("early_stopping") or {}).items() if k in es_fields}}
    return {"sampler": sampler, "sampler_options": dict(LEGACY_OPTIONS.get(sampler, {})),
            "early_stopping": {**es, "rungs": list(es["rungs"])}}


def resolve(recipe: Recipe, record: dict[str, Any] | None) -> Recipe:
    """``recipe`` with the settings it does not write taken from a study's ``record``.

    Args:
        recipe: the recipe a run was given; ``recipe.unwritten`` names what it leaves to defaults.
        record: the study's record (``recorded``), or None for a study yet to be made.

    Returns:
        The recipe to run: unchanged for a new study.

    Raises:
        RecipeError: the recipe writes a sampler other than the study's.
    """
    if record is None:
        return recipe
    sampler = record["sampler"]
    if "sampler" not in recipe.unwritten and recipe.sampler != sampler:
        raise RecipeError(f"study {recipe.name!r} was made with sampler {sampler!r} (recorded when "
                          f"it was made) and this recipe names {recipe.sampler!r}: remove the recipe's `sampler` "
                          f"line to resume it with {sampler!r}, or give the recipe a new name (or another "
                          f"storage) to search with {recipe.sampler!r}")
    stored_es = record["early_stopping"]  # `recorded` always writes it
    es = {f.name: getattr(recipe.early_stopping, f.name) for f in fields(EarlyStopping)}
    for key in es:
        if f"early_stopping.{key}" in recipe.unwritten and key in stored_es:
            es[key] = tuple(stored_es[key]) if key == "rungs" else stored_es[key]
    return replace(recipe, sampler=sampler, early_stopping=EarlyStopping(**es))


def sampler_for(record: dict[str, Any], seed: int) -> optuna.samplers.BaseSampler:
    """The study's recorded sampler, seeded with ``seed``."""
    return make_sampler(record["sampler"], seed, record.get("sampler_options"))
