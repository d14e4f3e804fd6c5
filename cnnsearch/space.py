"""Declared search spaces: what may vary, as a TOML data file that is never executed.

Every value in a space file is one of

* a scalar: fixed, nothing is suggested (``stride = 1``);
* a list: a categorical choice (``kernel_size = [3, 5, 7]``);
* a table ``{low, high[, step][, log]}``: an int or float range
  (``lr = {low = 1e-4, high = 1e-1, log = true}``).

Instead of ``depth`` and ``[block]``, a space may declare ``[[stages]]`` (MnasNet's
factorized hierarchical space): per stage, ``repeats`` blocks that share one set of
choices, the first of which may downsample, plus a ``width`` multiplier for every stage's
channels (see ``stages.py``). Parameter names: ``width``, ``s0_repeats``, ``s1_kind``, ...

Spaces are resolution-agnostic. ``sample(trial, input=..., num_classes=...)`` follows the
feature map while it samples, and only offers a stride or a pool while the map stays at
least ``min_side`` wide; otherwise the block records ``stride = 1`` / ``pool = "none"``.
Parameter names are stable (``depth``, ``b0_kernel_size``, ``head_hidden1``, ``lr``) and a
block's parameters exist only for blocks that exist. Categorical choices never change
between trials, so every Optuna sampler accepts the space; whatever can still be invalid
(a kernel larger than a tiny map) is caught by ``check()`` before any training.
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import MISSING, dataclass, fields
from pathlib import Path
from typing import Any

from .errors import SpaceError, SpecError, not_utf8
from .hparams import OPTIMIZERS, SEARCHABLE, searchable_defaults
from .ops import BLOCK_KINDS, COMMON_FIELDS, KIND_FIELDS
from .spec import ArchSpec, BlockSpec, HeadSpec
from .stages import sample_block, sample_stages

BLOCK_KEYS = tuple(BlockSpec.__dataclass_fields__)
STAGE_KEYS = ("repeats", *BLOCK_KEYS)
HEAD_KEYS = ("pool", "hidden_layers", "hidden", "activation", "dropout")
TOP_KEYS = ("description", "depth", "min_side", "block", "blocks", "stages", "width", "head", "train")
MAX_STAGES = 16
MAX_REPEATS = 8
# the stand-in network a block or head value is checked in: from_dict checks each value, not shapes
_PROBE = {"input": [1, 1, 1], "num_classes": 2}
# what a block or stage takes where the space is silent: BlockSpec's own defaults
BLOCK_DEFAULTS = {f.name: f.default for f in fields(BlockSpec) if f.default is not MISSING}
# the head's where the space is silent: HeadSpec's, and one width for hidden layers a space
# adds without saying how wide
HEAD_DEFAULTS = {"pool": HeadSpec.pool, "hidden_layers": len(HeadSpec().hidden), "hidden": 64,
                 "activation": HeadSpec.activation, "dropout": HeadSpec.dropout}

# Values used where a space leaves a training hyperparameter out: TrainConfig's defaults.
TRAIN_DEFAULTS: dict[str, Any] = searchable_defaults()


@dataclass(frozen=True)
class Dim:
    """One dimension of a space: fixed, a categorical choice, or a numeric range."""

    kind: str  # "fixed" | "choice" | "int" | "float"
    values: tuple = ()  # fixed: (value,); choice: the choices
    low: float = 0
    high: float = 0
    step: float | None = None
    log: bool = False

    def suggest(self, trial, name: str):
        if self.kind == "fixed":
            return self.values[0]
        if self.kind == "choice":
            return trial.suggest_categorical(name, list(self.values))
        if self.kind == "int":
            return trial.suggest_int(name, int(self.low), int(self.high), step=int(self.step or 1),
                                     log=self.log)
        return trial.suggest_float(name, self.low, self.high, step=self.step, log=self.log)

    def candidates(self) -> tuple:
        """Values worth validating: every choice, or a range's two ends."""
        if self.kind in ("fixed", "choice"):
            return self.values
        return (self.low, self.high)

    @property
    def largest(self):
        return max(self.candidates())


def _dim(value: Any, where: str) -> Dim:
    if isinstance(value, list):
        if not value:
            raise SpaceError(f"{where}: an empty list offers no choice")
        if len({repr(v) for v in value}) != len(value):
            raise SpaceError(f"{where}: choices repeat in {value!r}")
        return Dim("fixed", (value[0],)) if len(value) == 1 else Dim("choice", tuple(value))
    if isinstance(value, dict):
        unknown = set(value) - {"low", "high", "step", "log"}
        if unknown or "low" not in value or "high" not in value:
            raise SpaceError(f"{where}: a range is {{low, high[, step][, log]}}, got {value!r}")
        low, high, step, log = value["low"], value["high"], value.get("step"), value.get("log", False)
        numbers = [v for v in (low, high, step) if v is not None]
        if any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in numbers):
            raise SpaceError(f"{where}: range bounds must be numbers, got {value!r}")
        if not isinstance(log, bool):
            raise SpaceError(f"{where}: log must be true or false, got {log!r}")
        if not low <= high:
            raise SpaceError(f"{where}: low {low} is above high {high}")
        if log and (low <= 0 or step is not None):
            raise SpaceError(f"{where}: a log range needs low > 0 and no step")
        kind = "int" if all(isinstance(v, int) for v in numbers) else "float"
        return Dim(kind, (), low, high, step, log)
    return Dim("fixed", (value,))


# a space without [[stages]] never reads its width (only sample_stages does)
UNSTAGED_WIDTH = Dim("fixed", (1.0,))  # pragma: no mutate (read by staged spaces only, which parse their own)


@dataclass(frozen=True)
class SearchSpace:
    path: str
    description: str
    depth: Dim
    min_side: int
    block: tuple[dict[str, Dim], ...]  # per block index up to the largest depth
    head: dict[str, Dim]
    train: dict[str, Dim]
    stages: tuple[dict[str, Dim], ...] = ()  # a staged space: per stage, its dimensions
    width: Dim = UNSTAGED_WIDTH  # a staged space's width multiplier

    def sample(self, trial, *, input: tuple[int, int, int], num_classes: int) -> ArchSpec:
        """An ArchSpec chosen through ``trial``'s suggest API (any Optuna trial)."""
        if self.stages:
            blocks = sample_stages(trial, self.stages, self.width, input, self.min_side)
        else:
            _, h, w = input
            blocks = []
            for i in range(self.depth.suggest(trial, "depth")):
                block, h, w = sample_block(trial, self.block[i], f"b{i}_", h, w, self.min_side)
                blocks.append(block)
        n_hidden = self.head["hidden_layers"].suggest(trial, "head_hidden_layers")
        head = {
            "pool": self.head["pool"].suggest(trial, "head_pool"),
            "hidden": [self.head["hidden"].suggest(trial, f"head_hidden{j}") for j in range(n_hidden)],
            "activation": self.head["activation"].suggest(trial, "head_activation"),
            "dropout": self.head["dropout"].suggest(trial, "head_dropout") if n_hidden else HeadSpec.dropout,
        }
        return ArchSpec.from_dict(
            {"input": list(input), "num_classes": num_classes, "blocks": blocks, "head": head}
        )

    def sample_train(self, trial, *, fixed: dict[str, Any] | None = None) -> dict[str, Any]:
        """Training hyperparameters through ``trial``; defaults where the space is silent.
        ``fixed`` values (a recipe's ``[train] batch_size``) win over the space and are never
        suggested: a trial parameter that had no effect would mislead samplers and importances."""
        fixed = fixed or {}
        return {k: fixed[k] if k in fixed else self.train[k].suggest(trial, k) if k in self.train else v
                for k, v in TRAIN_DEFAULTS.items()}


def load_space(path: str | Path) -> SearchSpace:
    """Read and validate a search-space TOML file (data, never executed).

    Args:
        path: the space file.

    Returns:
        The ``SearchSpace``: ``sample(trial, input=, num_classes=)`` gives an ``ArchSpec``,
        ``sample_train(trial)`` the training hyperparameters.

    Raises:
        SpaceError: the file is missing, not UTF-8, not TOML, or a key or value is wrong;
            the message names the file and the key.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise SpaceError(f"{path}: cannot read ({exc.strerror})") from None
    except UnicodeDecodeError as exc:
        raise SpaceError(f"{path}: {not_utf8(exc)}") from None
    return parse_space(text, str(path))


def parse_space(text: str, path: str = "<space>") -> SearchSpace:
    """A space from TOML text (as stored with a study); ``path`` only labels errors."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SpaceError(f"{path}: not valid TOML ({exc})") from None
    try:
        return _parse(data, path)
    except SpaceError as exc:
        raise SpaceError(f"{path}: {exc}") from None


def _keys(table: Any, where: str, allowed: tuple[str, ...]) -> dict:
    if not isinstance(table, dict):
        raise SpaceError(f"{where}: expected a table, got {table!r}")
    for key in table:
        if key not in allowed:
            raise SpaceError(f"{where}.{key}: unknown key (allowed: {', '.join(allowed)})")
    return table


def _parse(data: dict, path: str) -> SearchSpace:
    _keys(data, "space", TOP_KEYS)
    depth = _dim(data.get("depth", {"low": 1, "high": 3}), "depth")
    if depth.kind not in ("fixed", "int", "choice") or any(
        isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= 32 for v in depth.candidates()
    ):
        raise SpaceError(f"depth: expected integers in [0, 32], got {data.get('depth')!r}")
    min_side = data.get("min_side", 2)
    if isinstance(min_side, bool) or not isinstance(min_side, int) or min_side < 1:
        raise SpaceError(f"min_side: expected an integer >= 1, got {min_side!r}")

    if "width" in data and "stages" not in data:
        raise SpaceError("width: a width multiplier scales [[stages]] channels; this space has no [[stages]]")
    stages, width = _parse_stages(data) if "stages" in data else ((), UNSTAGED_WIDTH)
    base = {**BLOCK_DEFAULTS, **_keys(data.get("block", {}), "block", BLOCK_KEYS)}
    overrides = _keys(data.get("blocks", {}), "blocks", tuple(str(i) for i in range(33)))
    per_block = []
    for i in range(0 if stages else int(depth.largest)):
        where = f"blocks.{i}" if str(i) in overrides else "block"
        raw = {**base, **_keys(overrides.get(str(i), {}), f"blocks.{i}", BLOCK_KEYS)}
        for key in ("out_channels", "kernel_size"):
            if key not in raw:
                raise SpaceError(f"block.{key}: missing (required)")
        dims = {k: _dim(v, f"{where}.{k}") for k, v in raw.items()}
        _validate_block(dims, where, given=set(data.get("block", {})) | set(overrides.get(str(i), {})))
        per_block.append(dims)

    head_raw = dict(HEAD_DEFAULTS)
    head_raw.update(_keys(data.get("head", {}), "head", HEAD_KEYS))
    head = {k: _dim(v, f"head.{k}") for k, v in head_raw.items()}
    _validate_head(head)

    train = {k: _dim(v, f"train.{k}") for k, v in
             _keys(data.get("train", {}), "train", SEARCHABLE).items()}
    _validate_train(train)
    return SearchSpace(path, str(data.get("description", "")), depth, min_side,
                       tuple(per_block), head, train, stages, width)


def _parse_stages(data: dict) -> tuple[tuple[dict[str, Dim], ...], Dim]:
    for key in ("depth", "block", "blocks"):
        if key in data:
            raise SpaceError(f"{key}: a space declares either stages or depth/block/blocks, not both")
    stages = data["stages"]
    if not isinstance(stages, list) or not 1 <= len(stages) <= MAX_STAGES:
        raise SpaceError(f"stages: expected 1 to {MAX_STAGES} [[stages]] tables, got {stages!r}"[:200])
    parsed = []
    for j, table in enumerate(stages):
        where = f"stages[{j}]"
        raw = {**BLOCK_DEFAULTS, "repeats": 1, **_keys(table, where, STAGE_KEYS)}
        for key in ("out_channels", "kernel_size"):
            if key not in raw:
                raise SpaceError(f"{where}.{key}: missing (required)")
        dims = {k: _dim(v, f"{where}.{k}") for k, v in raw.items()}
        repeats = dims.pop("repeats")
        if any(isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= MAX_REPEATS
               for v in repeats.candidates()):
            raise SpaceError(f"{where}.repeats: expected integers in [0, {MAX_REPEATS}], got {table['repeats']!r}")
        _validate_block(dims, where, given=set(table) - {"repeats"})
        parsed.append({**dims, "repeats": repeats})
    width = _dim(data.get("width", 1.0), "width")
    if any(isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.05 <= v <= 8 for v in width.candidates()):
        raise SpaceError(f"width: expected multipliers in [0.05, 8], got {data.get('width')!r}")
    return tuple(parsed), width


def _validate_block(dims: dict[str, Dim], where: str, given: set = frozenset()) -> None:
    """Every value a block can take must pass the spec's own validation, and every field
    the space sets must belong to a kind it can pick."""
    for key, dim in dims.items():
        for value in dim.candidates():
            if key == "padding" and value == "half":
                continue
            if dim.kind == "float" and key != "dropout":
                raise SpaceError(f"{where}.{key}: expected integers, got range {dim.low}..{dim.high}")
            owner = next((k for k in BLOCK_KINDS if key in KIND_FIELDS[k]), "conv")
            trial = {"out_channels": 1, "kernel_size": 1, "kind": owner, key: value}
            try:
                ArchSpec.from_dict({**_PROBE, "blocks": [trial]})
            except SpecError as exc:
                raise SpaceError(f"{where}.{key}: {exc.message}") from None
    kinds = dims["kind"].candidates()
    for key in sorted(given):
        if key not in COMMON_FIELDS and not any(k in KIND_FIELDS and key in KIND_FIELDS[k] for k in kinds):
            users = " and ".join(k for k in BLOCK_KINDS if key in KIND_FIELDS[k])
            raise SpaceError(f"{where}.{key}: applies to kind {users}, which {where} never picks "
                             f"(kind: {', '.join(map(str, kinds))})")


def _validate_head(head: dict[str, Dim]) -> None:
    n = head["hidden_layers"]
    if any(isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= 8 for v in n.candidates()):
        raise SpaceError("head.hidden_layers: expected integers in [0, 8]")
    for key, dim in head.items():
        if key == "hidden_layers":
            continue
        for value in dim.candidates():
            field = {"hidden": [value]} if key == "hidden" else {key: value}
            try:
                ArchSpec.from_dict({**_PROBE, "head": field})
            except SpecError as exc:
                raise SpaceError(f"head.{key}: {exc.message}") from None


def _validate_train(train: dict[str, Dim]) -> None:
    for key, dim in train.items():
        values = dim.candidates()
        if key == "optimizer":
            bad = [v for v in values if v not in OPTIMIZERS]
            if bad or dim.kind in ("int", "float"):
                raise SpaceError(f"train.optimizer: {bad[0] if bad else dim!r} is not one of "
                                 f"{', '.join(OPTIMIZERS)}")
            continue
        if any(isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)
               for v in values):
            raise SpaceError(f"train.{key}: expected numbers, got {list(values)!r}")
        if key == "batch_size" and any(not isinstance(v, int) or not 1 <= v <= 65536 for v in values):
            raise SpaceError(f"train.{key}: expected integers in [1, 65536], got {list(values)!r}")
        if key in ("lr", "momentum") and any(v <= 0 for v in values):
            raise SpaceError(f"train.{key}: must be > 0, got {list(values)!r}")
        if key == "label_smoothing" and any(not 0 <= v < 1 for v in values):
            raise SpaceError(f"train.{key}: must be in [0, 1), got {list(values)!r}")
        if key == "weight_decay" and any(v < 0 for v in values):
            raise SpaceError(f"train.{key}: must be >= 0, got {list(values)!r}")
