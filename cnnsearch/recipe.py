"""Study recipes: one TOML file says what to search, on which data, under which limits.

A recipe is validated as a whole before anything runs; an unknown key or a bad value is a
RecipeError naming the key (``error: studies/x.toml: limits.max_parms: unknown key``).
The recipe and its space file's text are stored in the study itself, so a worker on
another machine can join with just ``--storage URL --study NAME``.
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from .artifacts import parse_location
from .baselines import Baseline, check_sampler, parse_baselines
from .data import TORCHVISION, loader_defaults, loader_options
from .errors import RecipeError, SpaceError, not_utf8
from .hparams import TrainConfig
from .latency import ONNX_HINT
from .latency_remote import check_server
from .objectives import OBJECTIVES
from .recipe_sections import (  # noqa: F401 (the sections are part of a Recipe: importable from here)
    EarlyStopping,
    LatencySection,
    Limits,
    TrainSection,
    check_value,
    parse_early_stopping,
    parse_latency,
    parse_limits,
    parse_train,
)
from .space import SearchSpace, parse_space
from .storage import load_existing_study

SAMPLERS = ("tpe", "nsga2", "random", "gp", "evolution")


@dataclass(frozen=True)
class Recipe:
    name: str
    space: str  # path of the space file, as written in the recipe
    space_toml: str  # its text, stored with the study
    dataset: str = "digits"
    data: dict = field(default_factory=dict)  # options for data.load_data
    objectives: tuple[str, ...] = ("accuracy", "latency_ms")
    trials: int = 20
    seed: int = 0
    sampler: str = "evolution"  # picked by replayed searches (issue 22, docs/benchmarks.md); "tpe" until then
    max_consecutive_failures: int = 5  # this many FAILed trials in a row stop the search (exit 1)
    storage: str = ""
    artifacts: str = ""  # trained weights: a folder, or s3://bucket/prefix (artifacts.py)
    train: TrainSection = field(default_factory=TrainSection)
    latency: LatencySection = field(default_factory=LatencySection)
    limits: Limits = field(default_factory=Limits)
    early_stopping: EarlyStopping = field(default_factory=EarlyStopping)
    baselines: tuple[Baseline, ...] = ()  # known networks run as trials; not part of the meaning
    # the search settings (``sampler``, ``early_stopping.KEY``) the recipe file leaves to their
    # defaults: resuming a study, they take its recorded ones (samplers.resolve). Not stored.
    unwritten: frozenset[str] = field(default=frozenset(), compare=False, metadata={"stored": False})

    @property
    def directions(self) -> list[str]:
        return [OBJECTIVES[o] for o in self.objectives]

    @property
    def fixed_train(self) -> dict[str, Any]:
        """Training hyperparameters the recipe fixes over the space's (``[train] batch_size``)."""
        return {"batch_size": self.train.batch_size} if self.train.batch_size else {}

    def train_config(self, trial, *, seed: int, device: str, epochs: int | None = None,
                     space: SearchSpace | None = None) -> TrainConfig:
        """How ``trial`` trains: the one merge of the space's hyperparameters (suggested through
        ``trial``, or the space's fixed values and TrainConfig's defaults where it is silent),
        the recipe's fixed ones over them, and the recipe's epochs (or ``epochs``) and
        augmentation. The search samples through its live trial, ``finalize`` replays a
        trial's params through ``optuna.trial.FixedTrial``; ``space``: the loaded space, if
        the caller has it."""
        hp = (space or self.load_space()).sample_train(trial, fixed=self.fixed_train)
        return TrainConfig.from_params(hp, epochs=epochs or self.train.epochs, seed=seed, device=device,
                                       augment=self.train.augment)

    def load_space(self) -> SearchSpace:
        try:
            return parse_space(self.space_toml, self.space)
        except SpaceError as exc:
            raise RecipeError(f"space: {exc}") from None

    @property
    def data_defaults(self) -> dict[str, Any]:
        """The dataset loader's options at their defaults (numbers made floats where the
        loader's are, so ``0.2`` and a written ``0.2`` compare equal; paths as text)."""
        return {k: str(v) if isinstance(v, Path) else v for k, v in (loader_defaults(self.dataset) or {}).items()}

    def to_dict(self) -> dict[str, Any]:
        """The recipe as stored with its study (what it resolved to, not which keys were written)."""
        d = asdict(self)
        d.pop("unwritten")
        return d

    def fingerprint(self) -> str:
        return fingerprint(self)

    def meaning(self, *, fill_data_defaults: bool = True) -> dict[str, Any]:
        """Everything but the budget, flattened to ``section.key``: results under two recipes
        that differ here are not comparable on one front (DESIGN.md: a resumed study's recipe
        may change only its budget). Left out: ``trials``, ``max_consecutive_failures``, and
        where the study lives (name, storage, artifacts)."""
        d = self.to_dict()
        flat: dict[str, Any] = {"dataset": dataset_kind(d["dataset"]), "space": d["space_toml"],
                                "objectives": list(d["objectives"]), "seed": d["seed"], "sampler": d["sampler"]}
        # the dataset's options with its loader's defaults filled in: writing a default out
        # (val_fraction = 0.2) is no change
        for key, value in {**(self.data_defaults if fill_data_defaults else {}), **d["data"]}.items():
            if key not in ("root", "download"):  # where a torchvision set is cached: not what it is
                flat[f"data.{key}"] = value
        for section in ("train", "latency", "limits", "early_stopping"):
            flat.update({f"{section}.{k}": v for k, v in d[section].items() if f"{section}.{k}" != "latency.server"})
        if not self.early_stopping.enabled:  # switched off, its settings change nothing
            flat = {k: v for k, v in flat.items() if not k.startswith("early_stopping.") or k.endswith(".enabled")}
        return flat


def dataset_kind(dataset: str) -> str:
    """What a recipe's ``dataset`` means for comparing studies: a photo folder's path is not
    part of it (the folder may move, or sit elsewhere on another machine); the stored data
    description (classes, size, split statistics) is what says whether it is the same data."""
    return "folder:" if dataset.startswith("folder:") else dataset


def fingerprint(recipe: Recipe) -> str:
    """What makes two trials' training comparable (data, space, objectives, training,
    latency protocol, limits; not the budget, the sampler, nor early stopping's own settings)."""
    # a setting at its default is left out, so that a key added by a later version (at its
    # default) does not separate a study's new trials from its old ones
    defaults = {f"{section}.{k}": v for section, cls in (("train", TrainSection), ("latency", LatencySection),
                                                         ("limits", Limits)) for k, v in asdict(cls()).items()}
    defaults.update({f"data.{k}": v for k, v in recipe.data_defaults.items()})
    flat = {k: v for k, v in recipe.meaning().items()
            if not k.startswith("early_stopping.") and k not in ("sampler", "seed")
            and not (k in defaults and defaults[k] == v)}
    return hashlib.sha256(json.dumps(flat, sort_keys=True, default=str).encode()).hexdigest()[:16]


def changed_meaning(stored: Recipe, wanted: Recipe) -> list[str]:
    """``['train.epochs: 4 -> 5', ...]``: where ``wanted`` differs from the study's recipe."""
    # another dataset: its loader's defaults are not changes worth listing, only what was written
    fill = dataset_kind(stored.dataset) == dataset_kind(wanted.dataset)
    old, new = stored.meaning(fill_data_defaults=fill), wanted.meaning(fill_data_defaults=fill)
    changes = []

    def shown(flat: dict, key: str) -> str:
        return repr(flat[key]) if key in flat else "(unset)"

    for key in sorted(set(old) | set(new)):
        if old.get(key, ...) != new.get(key, ...):
            if key == "space":
                changes.append("space: the space file's text changed")
            else:
                changes.append(f"{key}: {shown(old, key)} -> {shown(new, key)}")
    return changes


def absolute_url(url: str, base: Path) -> str:
    """A relative SQLite URL made absolute against ``base``: the recipe's folder for a URL
    written in a recipe, the working directory for one given on the command line."""
    if url.startswith("sqlite:///") and not url.startswith("sqlite:////"):
        return f"sqlite:///{(base / url[len('sqlite:///'):]).resolve()}"
    return url


def _dataset_options(options: Any, dataset: str, base: Path) -> dict:
    """[data]: the options ``dataset``'s loader takes; a torchvision root relative to ``base``."""
    if not isinstance(options, dict):
        raise RecipeError(f"data: expected a table of dataset options, got {options!r}")
    allowed = loader_options(dataset)
    if allowed is None:
        raise RecipeError(f"dataset: {dataset!r} is not one of digits, shapes, folder:PATH, {', '.join(TORCHVISION)}")
    for key in options:
        if key not in allowed:
            raise RecipeError(f"data.{key}: not an option of {dataset} (allowed: {', '.join(allowed)})")
    if isinstance(options.get("root"), str):  # a torchvision set's folder: relative to the recipe too
        options = {**options, "root": str((base / Path(options["root"]).expanduser()).resolve())}
    return options


def from_dict(data: dict, base: Path, *, space_toml: str | None = None) -> Recipe:
    """Validate recipe data; ``base`` resolves relative paths (the recipe's folder)."""
    top = ("name", "space", "dataset", "data", "objectives", "trials", "seed", "sampler",
           "max_consecutive_failures", "storage",
           "artifacts", "train", "latency", "limits", "early_stopping", "baselines", "space_toml")
    for key in data:
        if key not in top:
            raise RecipeError(f"{key}: unknown key (allowed: {', '.join(top[:-1])})")
    name = check_value(data.get("name"), "name", str)
    if not name or not all(c.isalnum() or c in "-_." for c in name):
        raise RecipeError(f"name: {name!r} must be letters, digits, '-', '_' or '.'")
    space = check_value(data.get("space"), "space", str)
    if space_toml is None:
        space_toml = data.get("space_toml")
    if space_toml is None:
        try:
            space_toml = (base / space).read_text(encoding="utf-8")
        except OSError as exc:
            raise RecipeError(f"space: cannot read {base / space} ({exc.strerror})") from None
        except UnicodeDecodeError as exc:
            raise RecipeError(f"space: {base / space}: {not_utf8(exc)}") from None
    dataset = check_value(data.get("dataset", Recipe.dataset), "dataset", str)
    objectives = data.get("objectives", list(Recipe.objectives))
    if (not isinstance(objectives, (list, tuple)) or not objectives
            or not all(isinstance(o, str) and o in OBJECTIVES for o in objectives)
            or len(set(objectives)) != len(objectives)):
        raise RecipeError(f"objectives: {objectives!r} must be distinct names from {', '.join(OBJECTIVES)}")
    sampler = check_value(data.get("sampler", Recipe.sampler), "sampler", str)
    if sampler not in SAMPLERS:
        raise RecipeError(f"sampler: {sampler!r} is not one of {', '.join(SAMPLERS)}")
    # every path in a recipe is relative to the recipe's folder: the space, the storage, the
    # artifacts and a folder: dataset (stored resolved, so the study's copy means the same anywhere)
    storage = absolute_url(check_value(data.get("storage", f"sqlite:///{name}.db"), "storage", str), base)
    artifacts = parse_location(check_value(data.get("artifacts", f"{name}_artifacts"), "artifacts", str), base)
    if dataset.startswith("folder:") and dataset != "folder:":
        dataset = f"folder:{(base / Path(dataset[len('folder:'):]).expanduser()).resolve()}"
    options = _dataset_options(data.get("data", {}), dataset, base)

    train, latency = parse_train(data), parse_latency(data)
    limits, early = parse_limits(data), parse_early_stopping(data)
    recipe = Recipe(
        name=name, space=space, space_toml=space_toml, dataset=dataset, data=dict(options),
        objectives=tuple(objectives),
        trials=check_value(data.get("trials", Recipe.trials), "trials", int, low=1),
        seed=check_value(data.get("seed", Recipe.seed), "seed", int, low=0),
        sampler=sampler, storage=storage,
        max_consecutive_failures=check_value(data.get("max_consecutive_failures", Recipe.max_consecutive_failures),
                                        "max_consecutive_failures", int, low=1), artifacts=artifacts, train=train, latency=latency,
        limits=limits, early_stopping=early, baselines=parse_baselines(data.get("baselines", []), base),
        unwritten=unwritten_settings(data),
    )
    check_sampler(recipe.sampler, recipe.baselines)
    recipe.load_space()  # a bad space is a bad recipe: say so before any trial
    return recipe


def unwritten_settings(data: dict) -> frozenset[str]:
    """The search settings ``data`` leaves to their defaults: ``sampler``, ``early_stopping.KEY``."""
    es = data.get("early_stopping", {})
    return frozenset({"sampler"} - set(data)) | frozenset(
        f"early_stopping.{k}" for k in EarlyStopping.__dataclass_fields__ if k not in es)


def check_runnable(recipe: Recipe, *, timing: bool = True) -> None:
    """What a valid recipe needs from this machine before a search (or, not ``timing``, a finalize):
    its devices, onnxruntime, its latency server, a folder dataset's folders (not when only read)."""
    import torch
    if recipe.latency.runtime == "onnxruntime" or (recipe.latency.reference and not recipe.latency.server):
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            key = "runtime" if recipe.latency.runtime == "onnxruntime" else "reference"
            raise RecipeError(f"latency.{key}: {ONNX_HINT}") from None
    if recipe.latency.server and timing:  # reachable, the token accepted, the same thread count
        check_server(recipe.latency)
    for key, device in (("train.device", recipe.train.device), ("latency.device", recipe.latency.device)):
        if device.startswith("cuda"):
            count = torch.cuda.device_count() if torch.cuda.is_available() else 0
            index = int(device.split(":")[1]) if ":" in device else 0
            if index >= count:
                raise RecipeError(f"{key}: {device!r}, but this machine has {count} CUDA GPU(s); "
                                  f"use {'auto or cpu' if key == 'train.device' else 'cpu'}")
    if recipe.dataset.startswith("folder:"):
        folder = Path(recipe.dataset[len("folder:"):])
        classes = [p for p in folder.iterdir() if p.is_dir()] if folder.is_dir() else []
        if len(classes) < 2:
            raise RecipeError(f"dataset: {folder} must be a folder with one sub-folder of images per class "
                              f"(found {'no such folder' if not folder.is_dir() else f'{len(classes)} sub-folder(s)'})")


def load_recipe(path: str | Path) -> Recipe:
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise RecipeError(f"{path}: cannot read ({exc.strerror})") from None
    except UnicodeDecodeError as exc:
        raise RecipeError(f"{path}: {not_utf8(exc)}") from None
    except tomllib.TOMLDecodeError as exc:
        raise RecipeError(f"{path}: not valid TOML ({exc})") from None
    try:
        return from_dict(data, path.parent)
    except RecipeError as exc:
        raise RecipeError(f"{path}: {exc}") from None
    except UnicodeDecodeError as exc:  # the one other file from_dict reads: the space file
        raise RecipeError(f"{path}: space: {path.parent / data['space']}: {not_utf8(exc)}") from None


def resolve_recipe(path: str | None, storage: str | None = None, study: str | None = None) -> Recipe:
    """What every command that works on a study starts from: a recipe file (``--storage``
    overriding its storage, ``--study`` its name), or the recipe stored in an existing study."""
    if path:
        recipe = load_recipe(path)
        if study is not None and not (study and all(c.isalnum() or c in "-_." for c in study)):
            raise RecipeError(f"--study: {study!r} must be letters, digits, '-', '_' or '.'")
        if storage or study:  # a given --study is honoured, never replaced by the recipe's name
            # the recipe's storage (a URL on the command line is relative to the working
            # directory) and artifacts folder, under the study name asked for
            recipe = replace(from_dict({**recipe.to_dict(), "name": study or recipe.name,
                                        "storage": absolute_url(storage, Path.cwd()) if storage else recipe.storage},
                                       Path(path).parent), unwritten=recipe.unwritten)
        return recipe
    if not (storage and study):
        raise RecipeError("give a recipe (.toml), or --storage URL and --study NAME")
    stored = load_existing_study(storage, study).user_attrs.get("recipe")
    if not stored:
        raise RecipeError(f"study {study!r} was not made by cnnsearch (no stored recipe); give the recipe file")
    return from_dict({**stored, "storage": absolute_url(storage, Path.cwd())}, Path.cwd())
