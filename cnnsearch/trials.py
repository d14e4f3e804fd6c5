"""What a finished trial *is*: its status, whether it is feasible, and the Pareto set.

The writing side (``objective.py``, ``study.py``) and the reading side (``report.py``,
``plots.py``, the CLI) both depend on this module, and it depends on nothing of ours but
the Pareto sort (``storage.non_domination_ranks``, Optuna's), so the two sides agree on the
vocabulary without importing each other.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum

import numpy as np
import optuna
from optuna.trial import TrialState

from .storage import non_domination_ranks


class Status(StrEnum):
    """``user_attrs["status"]`` of a trial. Stored as the plain string value."""

    OK = "ok"  # trained to the last epoch: feasible
    EARLY_STOPPED = "early_stopped"  # PRUNED by early stopping, its curve kept
    SHAPE = "shape"  # the sampled network cannot run on the input: never trained
    LIMIT = "limit"  # over limits.max_params / max_flops / max_latency_ms: never trained
    DIVERGED = "diverged"  # non-finite training loss
    OOM = "oom"  # out of memory even at half the batch
    ERROR = "error"  # an exception: FAIL, with its reason
    RUNNING = "running"  # not finished (only shown, never stored)


# never trained: the recipe or the space rules them out (the all-infeasible guard counts these)
REJECTED = frozenset({Status.SHAPE, Status.LIMIT})

# The one constraint every trial sets (Trial.set_constraint): > 0 is infeasible.
CONSTRAINT = "infeasible"

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)  # what counts against a study's budget


def status_of(t: optuna.trial.FrozenTrial) -> str:
    """The stored status, or the trial's state for trials that never recorded one."""
    if "status" in t.user_attrs:
        return str(t.user_attrs["status"])
    return t.state.name.lower()  # "running" (Status.RUNNING, shown only), "waiting", "fail", ...


def is_feasible(t: optuna.trial.FrozenTrial) -> bool:
    """Finished, within the shapes and every limit, trained without diverging or OOM."""
    return t.state == TrialState.COMPLETE and t.constraints.get(CONSTRAINT, 0.0) <= 0


def pareto_mask(points: Sequence[Sequence[float]], directions: Sequence[str]) -> list[bool]:
    """Which points no other point dominates (ties kept, as Optuna's ``best_trials``).

    ``directions`` holds "maximize" / "minimize" per coordinate. A point with a NaN
    coordinate (a study without that objective) is on no front.
    """
    if not points:
        return []
    signs = np.array([-1.0 if d == "maximize" else 1.0 for d in directions])  # pragma: no mutate (any positive multiple of a sign orders the points alike)
    loss = np.asarray(points, dtype=float) * signs  # pragma: no mutate (dividing by +-1 is multiplying by it)
    placed = ~np.isnan(loss).any(axis=1)  # a point missing a coordinate is on no front and hides none
    front = np.zeros(len(loss), dtype=bool)
    if placed.any():
        front[placed] = non_domination_ranks(loss[placed]) == 0
    return front.tolist()
