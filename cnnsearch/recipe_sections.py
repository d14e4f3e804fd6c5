"""A recipe's sections ([train], [latency], [limits], [early_stopping]): their fields and
defaults, and the checks that turn a TOML table into one, each bad value a RecipeError
naming its key. ``recipe.from_dict`` puts them together with the top-level keys."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, make_dataclass
from typing import Any

from .errors import RecipeError
from .hparams import TrainConfig
from .latency import RUNTIMES
from .latency_remote import check_server_url
from .objectives import LIMITED


@dataclass(frozen=True)
class TrainSection:
    epochs: int = TrainConfig.epochs
    batch_size: int | None = None  # None: the space's (tuned) batch size
    device: str = TrainConfig.device
    augment: bool = TrainConfig.augment


@dataclass(frozen=True)
class LatencySection:
    device: str = "cpu"  # where the model will be deployed, not where it trains
    batch_size: int = 1
    threads: int = 1
    runtime: str = "torch"  # or "onnxruntime": exported to ONNX and timed in an onnxruntime session
    server: str = ""  # a latency server on the target (latency_remote.py): where, not what (device is compared)
    reference: bool = False  # scaled by a reference network timed beside each candidate (robust to drift)


# [limits]: one optional cap per objective that may be one (objectives.METRICS), None: no cap
Limits = make_dataclass("Limits", [(m.limit, float | None, None) for m in LIMITED], frozen=True)
Limits.__module__ = __name__  # where pickle and repr find it (make_dataclass says 'types')


@dataclass(frozen=True)
class EarlyStopping:
    """See early_stopping.py: dominance on the known objectives and accuracy, at rungs."""

    # the defaults were picked by replaying whole searches on tabular benchmarks (issue 22:
    # benchmarks/search_quality.py --quick, benchmarks/es_settings.py; docs/benchmarks.md):
    # with the evolution sampler, on with a 0.03 margin reaches random search's 200-trial
    # hypervolume on 0.25-0.40 of its epochs. Studies made before keep theirs (samplers.py).
    enabled: bool = True
    margin: float = 0.03  # accuracy points a dominating earlier trial must lead by: noise on a small validation split
    rungs: tuple[float, ...] = (1 / 6, 1 / 3, 2 / 3)  # compare after these fractions of the epochs
    keep: float = 1 / 3  # never stop a trial in this top fraction of its peers (MO-ASHA's 1/eta, eta = 3)
    min_epoch: int = 1  # never stop before this epoch


def check_value(value: Any, key: str, kind: type | tuple, *, low=None, allow_none=False):
    if value is None and allow_none:
        return None
    ok = isinstance(value, kind) and not (isinstance(value, bool) and bool not in (
        kind if isinstance(kind, tuple) else (kind,)))
    if not ok:
        want = {int: "an integer", (int, float): "a number", str: "a string", bool: "true or false"}
        raise RecipeError(f"{key}: expected {want[kind]}, got {value!r}")  # every caller's kind is here
    if low is not None and (value < low or (isinstance(value, float) and not math.isfinite(value))):
        raise RecipeError(f"{key}: {value!r} must be >= {low}")
    return value


def _fraction(value: Any, key: str) -> float:
    value = float(check_value(value, key, (int, float)))
    if not 0 < value <= 1:
        raise RecipeError(f"{key}: {value!r} must be in (0, 1]")
    return value


def _rungs(value: Any) -> tuple[float, ...]:
    if not isinstance(value, (list, tuple)) or not value:
        raise RecipeError(f"early_stopping.rungs: expected a list of fractions of the epochs, e.g. [0.34, 0.67], "
                          f"got {value!r}")
    rungs = tuple(_fraction(f, "early_stopping.rungs") for f in value)
    if any(f >= 1 for f in rungs):
        raise RecipeError(f"early_stopping.rungs: {list(rungs)!r}: a rung at the end of training stops nothing; "
                          "use fractions below 1")
    return rungs


def section_table(data: dict, key: str, cls):
    table = data.get(key, {})
    if not isinstance(table, dict):
        raise RecipeError(f"{key}: expected a table, got {table!r}")
    allowed = tuple(cls.__dataclass_fields__)
    for k in table:
        if k not in allowed:
            raise RecipeError(f"{key}.{k}: unknown key (allowed: {', '.join(allowed)})")
    return table



def parse_train(data: dict) -> TrainSection:
    t = section_table(data, "train", TrainSection)
    train = TrainSection(
        epochs=check_value(t.get("epochs", TrainSection.epochs), "train.epochs", int, low=1),
        batch_size=check_value(t.get("batch_size"), "train.batch_size", int, low=1, allow_none=True),
        device=check_value(t.get("device", TrainSection.device), "train.device", str),
        augment=check_value(t.get("augment", TrainSection.augment), "train.augment", bool),
    )
    if not re.fullmatch(r"auto|cpu|cuda(:\d{1,3})?", train.device):
        raise RecipeError(f"train.device: {train.device!r} is not one of auto, cpu, cuda, cuda:N")
    return train


def parse_latency(data: dict) -> LatencySection:
    lt = section_table(data, "latency", LatencySection)
    latency = LatencySection(
        device=check_value(lt.get("device", LatencySection.device), "latency.device", str),
        batch_size=check_value(lt.get("batch_size", LatencySection.batch_size), "latency.batch_size", int, low=1),
        threads=check_value(lt.get("threads", LatencySection.threads), "latency.threads", int, low=1),
        runtime=check_value(lt.get("runtime", LatencySection.runtime), "latency.runtime", str),
        server=check_server_url(check_value(lt["server"], "latency.server", str)) if lt.get("server", "") != "" else "",
        reference=check_value(lt.get("reference", LatencySection.reference), "latency.reference", bool),
    )
    if latency.runtime not in RUNTIMES:
        raise RecipeError(f"latency.runtime: {latency.runtime!r} is not one of {', '.join(RUNTIMES)}")
    if not re.fullmatch(r"cpu|cuda(:\d{1,3})?", latency.device):  # where it will run: no guessing
        raise RecipeError(f"latency.device: {latency.device!r} is not one of cpu, cuda, cuda:N "
                          "(the device the network will be deployed on)")
    if latency.runtime == "onnxruntime" and latency.device != "cpu":
        raise RecipeError(f"latency.runtime: 'onnxruntime' times on the cpu only, not {latency.device!r}")
    if latency.reference and latency.device != "cpu":
        raise RecipeError(f"latency.reference: the reference network runs on the cpu only, not {latency.device!r}")
    if latency.server and latency.runtime != "onnxruntime":
        raise RecipeError('latency.server: a latency server times ONNX models: add runtime = "onnxruntime"')
    return latency


def parse_limits(data: dict) -> Limits:
    lm = section_table(data, "limits", Limits)
    return Limits(**{m.limit: check_value(lm.get(m.limit), f"limits.{m.limit}", m.limit_type,  # a count >= 1
                                          low=1 if m.limit_type is int else 0, allow_none=True) for m in LIMITED})


def parse_early_stopping(data: dict) -> EarlyStopping:
    es = section_table(data, "early_stopping", EarlyStopping)
    return EarlyStopping(
        enabled=check_value(es.get("enabled", EarlyStopping.enabled), "early_stopping.enabled", bool),
        margin=float(check_value(es.get("margin", EarlyStopping.margin), "early_stopping.margin", (int, float),
                                 low=0)),
        rungs=_rungs(es.get("rungs", EarlyStopping.rungs)),
        keep=_fraction(es.get("keep", EarlyStopping.keep), "early_stopping.keep"),
        min_epoch=check_value(es.get("min_epoch", EarlyStopping.min_epoch), "early_stopping.min_epoch", int, low=1),
    )
