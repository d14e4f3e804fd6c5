"""What a study can optimise and cap: one table, one entry per objective.

Each entry says its direction, when its value is known (from the shape table before
anything is built, from the latency timing, or only after training), its plot title,
how a trial's value is read off what was measured, and the ``[limits]`` key that caps it
(a candidate over a cap is never trained). Recipes, the objective, early stopping, the
report and the plots all read this table; adding an objective is one entry here (and a
test). Nothing here imports the rest of the package.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

# when an objective's value is known: from the shape table, after timing, after training
CHECK, LATENCY, TRAIN = "check", "latency", "train"


@dataclass(frozen=True)
class Metric:
    name: str  # the objective's name in a recipe and the trial's user attribute
    direction: str  # "maximize" or "minimize"
    stage: str  # CHECK, LATENCY or TRAIN: when a trial knows its value
    title: str  # the plot's axis title
    read: Callable[[Any], float]  # its value from what that stage measured (a ShapeTable, a Latency, a TrainResult)
    limit: str | None = None  # the [limits] key that caps it, or None: it cannot be a limit
    limit_type: type | tuple[type, ...] = int  # what the cap may be in a recipe: int, or (int, float)
    shown: str = "{:,}"  # how a value (and its cap) reads in an infeasible trial's reason
    cap_shown: str = "{:,}"

    @property
    def known_before_training(self) -> bool:
        """Known before the trial trains: early stopping compares trials on these."""
        return self.stage != TRAIN

    def over_limit(self, value: float, cap: float) -> str:
        """The infeasible reason, e.g. 'params 12,345 > limits.max_params 3,000'."""
        return f"{self.shown.format(value)} > limits.{self.limit} {self.cap_shown.format(cap)}"


METRICS: dict[str, Metric] = {m.name: m for m in (
    Metric("accuracy", "maximize", TRAIN, "validation accuracy", operator.attrgetter("accuracy")),
    # the mean of the per-class recalls on the validation split (scikit-learn's
    # balanced_accuracy_score), for folders whose classes are far from equal in size
    Metric("balanced_accuracy", "maximize", TRAIN, "validation balanced accuracy",
           operator.attrgetter("balanced_accuracy")),
    Metric("latency_ms", "minimize", LATENCY, "latency (ms, median)", operator.attrgetter("median_ms"),
           limit="max_latency_ms", limit_type=(int, float), shown="latency {:.3f} ms", cap_shown="{}"),
    Metric("params", "minimize", CHECK, "parameters", operator.attrgetter("params"),
           limit="max_params", shown="params {:,}"),
    Metric("flops", "minimize", CHECK, "FLOPs (batch 1)", operator.attrgetter("flops"),
           limit="max_flops", shown="flops {:,}"),
    # the most bytes of activations alive at once for one fp32 image (shapes._peak): what
    # an inference needs beyond its weights, the figure a microcontroller's RAM caps
    Metric("memory_bytes", "minimize", CHECK, "peak activation memory (bytes, batch 1)",
           operator.attrgetter("peak_activation_bytes"), limit="max_memory_bytes", shown="memory_bytes {:,}"),
)}

OBJECTIVES = {name: m.direction for name, m in METRICS.items()}  # what a recipe's `objectives` may name
# what a recipe's [limits] may cap: the sizes first (their order in messages), then latency
LIMITED = tuple(sorted((m for m in METRICS.values() if m.limit is not None), key=lambda m: m.stage != CHECK))


def at_stage(stage: str) -> tuple[Metric, ...]:
    """The metrics a trial knows once ``stage`` has run, in the table's order."""
    return tuple(m for m in METRICS.values() if m.stage == stage)
