"""Known networks run as trials of a study, so that the front answers "does the search beat
what we have?" (``[[baselines]]`` in a recipe, ``search --baseline SPEC.json``).

A baseline is an architecture: its spec file's ``input`` and ``num_classes`` are replaced
by the study's data, so the tutorial's nets and a shipped MobileNetV3-like net fit any
dataset they can (one that cannot is infeasible, with the shape error as its reason, like a
sampled candidate). Each is enqueued once per study as a WAITING trial carrying
``user_attrs["baseline"]`` (its name) and its spec; the objective then uses that spec
instead of sampling one, and trains, measures and limits it exactly as a sampled trial
(its training settings are drawn like any trial's). Enqueueing happens under a study-wide
lock (a file lock beside a SQLite database, an advisory lock on PostgreSQL), so a resumed
run or a second worker never enqueues it again.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from .errors import RecipeError, SpecError
from .spec import ArchSpec

# stand-ins while a baseline's fields are validated, before the data is known
_PLACEHOLDER = {"input": [3, 32, 32], "num_classes": 10}


@dataclass(frozen=True)
class Baseline:
    name: str
    spec: dict  # the spec file's content, without input and num_classes

    @property
    def key(self) -> str:
        """Equal for equal architectures, whatever the name: one trial per spec and study."""
        return hashlib.sha256(json.dumps(self.spec, sort_keys=True).encode()).hexdigest()[:16]

    def spec_for(self, input_shape: tuple[int, int, int], num_classes: int) -> ArchSpec:
        return ArchSpec.from_dict({**self.spec, "input": list(input_shape), "num_classes": num_classes})


def load_baseline(source: str | dict, *, base: Path, name: str | None = None, where: str) -> Baseline:
    """A baseline from a spec file (relative to ``base``) or an inline spec table; its fields
    are validated now (RecipeError naming ``where``), its shapes once the data is known."""
    if isinstance(source, str):
        path = (base / Path(source).expanduser()).resolve()
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise RecipeError(f"{where}: cannot read {path} ({exc.strerror})") from None
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise RecipeError(f"{where}: {path} is not a JSON spec ({exc})") from None
        name = name or path.stem
    elif isinstance(source, dict):
        data = source
    else:
        raise RecipeError(f"{where}: expected the path of a spec (.json), got {source!r}")
    if not isinstance(data, dict):
        raise RecipeError(f"{where}: a spec is a JSON object, got {type(data).__name__}")
    if (not isinstance(name, str) or not name.strip() or len(name) > 100
            or not all(c.isalnum() or c in " -_.+()" for c in name)):  # shown in tables, logs and HTML
        raise RecipeError(f"{where}.name: {name!r} must be 1-100 letters, digits, spaces or -_.+()")
    spec = {k: v for k, v in data.items() if k not in _PLACEHOLDER}
    try:
        ArchSpec.from_dict({**spec, **_PLACEHOLDER})
    except SpecError as exc:
        raise RecipeError(f"{where}: {exc}") from None
    return Baseline(name, spec)


def parse_baselines(entries: Any, base: Path) -> tuple[Baseline, ...]:
    """``[[baselines]]`` of a recipe: ``spec`` (a path, or a stored spec) and optional ``name``."""
    if not isinstance(entries, (list, tuple)):  # a tuple: a Recipe's own, through to_dict
        raise RecipeError(f"baselines: expected [[baselines]] tables, got {entries!r}")
    found = []
    for i, entry in enumerate(entries):
        where = f"baselines[{i}]"
        if not isinstance(entry, dict) or "spec" not in entry or set(entry) - {"spec", "name"}:
            raise RecipeError(f"{where}: expected spec = \"path.json\" and an optional name, got {entry!r}")
        found.append(load_baseline(entry["spec"], base=base, name=entry.get("name"), where=where))
    names = [b.name for b in found]
    if len(set(names)) != len(names):
        raise RecipeError(f"baselines: names must differ, got {names}")
    keys = [b.key for b in found]
    for i, key in enumerate(keys):
        if key in keys[:i]:
            raise RecipeError(f"baselines[{i}]: the same network as baselines[{keys.index(key)}] "
                              f"({found[keys.index(key)].name!r}): it runs once per study")
    return tuple(found)


# samplers whose relative search space is the intersection of every trial's parameters: a
# baseline (training parameters only) would shrink it to those, and the architecture would
# then be drawn at random for the rest of the study. Evolution, TPE (grouped) and random sampling are not.
INTERSECTION_SAMPLERS = ("nsga2", "gp")


def check_sampler(sampler: str, baselines: tuple[Baseline, ...]) -> None:
    if baselines and sampler in INTERSECTION_SAMPLERS:
        raise RecipeError(f"baselines: sampler {sampler!r} searches only the parameters every trial has, and a "
                          "baseline has no architecture parameters: use sampler \"evolution\" (the default), "
                          "\"tpe\" or \"random\" with baselines")


def of_trial(trial: optuna.Trial | optuna.trial.FrozenTrial) -> Baseline | None:
    """The baseline a trial runs (None: a sampled candidate)."""
    attrs = trial.user_attrs
    if "baseline" not in attrs or not isinstance(attrs.get("baseline_spec"), dict):
        return None
    return Baseline(str(attrs["baseline"]), attrs["baseline_spec"])


def missing_baselines(study: optuna.Study, baselines: tuple[Baseline, ...]) -> list[Baseline]:
    """The baselines the study has not run, is not running and does not owe (a re-queued
    copy of a dead worker's baseline is owed). A FAILed one is missing: run again."""
    have = {t.user_attrs.get("baseline_key") for t in study.get_trials(deepcopy=False)
            if t.state != TrialState.FAIL}
    return [b for b in baselines if b.key not in have]


def enqueue_baselines(study: optuna.Study, baselines: tuple[Baseline, ...], *, url: str) -> list[str]:
    """Enqueue each of ``missing_baselines``; returns the names enqueued. Study-wide lock:
    see above."""
    from .storage import study_lock

    if not baselines:
        return []
    with study_lock(url, study.study_name):
        added = []
        for b in missing_baselines(study, baselines):
            study.enqueue_trial({}, user_attrs={"baseline": b.name, "baseline_spec": b.spec, "baseline_key": b.key})
            added.append(b.name)
    return added
